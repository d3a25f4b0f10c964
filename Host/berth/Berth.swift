// berth — the Berth command line: talks to berthd over its unix socket, and checks plugins without a daemon.
import ArgumentParser
import BerthCore
import BerthWire
import Foundation

struct Connection: ParsableArguments {
    @Option(name: .long, help: "berthd's API socket (default: $BERTH_SOCKET, else ./berth-state/berthd.sock).")
    var socket: String?

    @Option(name: [.customShort("o"), .long], help: "Output format: table or json.")
    var output: OutputFormat = .table

    var socketPath: String {
        socket ?? ProcessInfo.processInfo.environment["BERTH_SOCKET"] ?? "./berth-state/berthd.sock"
    }

    /// Sends a request and returns the JSON body, or exits with berthd's error message.
    func call(_ method: String, _ path: String, body: JSON? = nil) throws -> JSON {
        let conn = UnixHTTPConnection(path: socketPath)
        let resp: HTTPResponse
        let who = "\(ProcessInfo.processInfo.environment["USER"] ?? "uid\(getuid())")@\(ProcessInfo.processInfo.hostName)"
        do { resp = try conn.request(method, path, body: body?.bytes, headers: [("X-Berth-Actor", who)]) } catch let e as WireError {
            throw CLIError("\(e.message)\n(is berthd running? set --socket or BERTH_SOCKET)")
        }
        let json = (try? resp.json()) ?? .string(resp.text)
        guard resp.status < 300 else {
            throw CLIError("berthd: \(json["error"]?.string ?? resp.text) (HTTP \(resp.status))")
        }
        return json
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable { case table, json }

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Prints rows as an aligned table.
func table(_ header: [String], _ rows: [[String]]) {
    var widths = header.map { $0.count }
    for r in rows { for (i, c) in r.enumerated() where i < widths.count { widths[i] = max(widths[i], c.count) } }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, c in i == cells.count - 1 ? c : c.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }
    print(line(header))
    for r in rows { print(line(r)) }
}

func str(_ j: JSON?) -> String {
    guard let j else { return "-" }
    switch j {
    case .string(let s): return s
    case .null: return "-"
    case .array(let a): return a.map { str($0) }.joined(separator: ",")
    default: return j.serialized
    }
}

func emit(_ json: JSON, _ format: OutputFormat, _ tableBody: () -> Void) {
    if format == .json { print(json.pretty) } else { tableBody() }
}

func readJSONFile(_ path: String) throws -> JSON {
    let bytes: [UInt8]
    if path == "-" {
        bytes = Array(FileHandle.standardInput.readDataToEndOfFile())
    } else {
        guard let d = FileManager.default.contents(atPath: path) else { throw CLIError("cannot read \(path)") }
        bytes = Array(d)
    }
    do { return try JSON.parse(bytes) } catch { throw CLIError("\(path): \(error)") }
}

@main
struct Berth: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "berth",
        abstract: "Operate a Berth daemon and check plugins.",
        discussion: "Commands that talk to berthd use --socket or $BERTH_SOCKET; `berth plugin check` needs no daemon.",
        subcommands: [Status.self, Plugins.self, PluginCmd.self, Events.self, Pools.self, Attachments.self, Site.self, Volumes.self,
                      Nodes.self, ApplyCmd.self, GetCmd.self, DeleteCmd.self, Instances.self])
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show whether berthd is up and how many plugins it runs.")
    @OptionGroup var conn: Connection
    func run() throws {
        let j = try conn.call("GET", "/healthz")
        emit(j, conn.output) {
            print("berthd \(str(j["status"])) — site \(str(j["site"])), plugins loaded \(str(j["plugins"]?["loaded"])), failed \(str(j["plugins"]?["failed"]))")
        }
    }
}

// MARK: plugins

struct Plugins: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List, inspect, enable, disable and reload the daemon's plugins.",
                                                    subcommands: [List.self, Show.self, Enable.self, Disable.self, Reload.self])

    struct Enable: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enable a plugin of the running site (load and create it).")
        @OptionGroup var conn: Connection
        @Argument(help: "Plugin name") var name: String
        func run() throws { printChanges(try conn.call("POST", "/v1/plugins/\(name)/enable")) }
    }

    struct Disable: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a plugin (refused while it holds live state, unless --force).")
        @OptionGroup var conn: Connection
        @Argument(help: "Plugin name") var name: String
        @Flag(name: .long, help: "Disable even though it holds live state.") var force = false
        func run() throws { printChanges(try conn.call("POST", "/v1/plugins/\(name)/disable\(force ? "?force=true" : "")")) }
    }

    struct Reload: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Re-read a plugin's file: a new instance (a new build is an upgrade); the old one drains.")
        @OptionGroup var conn: Connection
        @Argument(help: "Plugin name") var name: String
        func run() throws { printChanges(try conn.call("POST", "/v1/plugins/\(name)/reload")) }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List plugins with version, kinds, sha256, isolation, state and call statistics.")
        @OptionGroup var conn: Connection
        func run() throws {
            let j = try conn.call("GET", "/v1/plugins")
            emit(j, conn.output) {
                table(["NAME", "VERSION", "KINDS", "SHA256", "ISOLATION", "STATE", "CALLS", "ERRORS", "MEAN µs", "REASON"],
                      (j["plugins"]?.array ?? []).map { p in
                          [str(p["name"]), str(p["version"]), str(p["kinds"]), String(str(p["sha256"]).prefix(12)), str(p["isolation"]),
                           str(p["state"]), str(p["calls"]), str(p["errors"]), str(p["meanLatencyMicros"]), str(p["reason"])]
                      })
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one plugin in full.")
        @OptionGroup var conn: Connection
        @Argument(help: "Plugin name") var name: String
        func run() throws {
            let j = try conn.call("GET", "/v1/plugins/\(name)")
            emit(j, conn.output) {
                for (k, v) in j.object ?? [] {
                    print("\(k):".padding(toLength: 20, withPad: " ", startingAt: 0) + (k == "config" || k == "configSchema" ? v.serialized : str(v)))
                }
            }
        }
    }
}

func printChanges(_ j: JSON) {
    let changes = j["changes"]?.array ?? []
    table(["PLUGIN", "ACTION", "DETAIL"], changes.map { [str($0["plugin"]), str($0["action"]), str($0["detail"])] })
}

struct Site: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show or apply the site configuration at run time.", subcommands: [Show.self, Apply.self])

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the running site configuration.")
        @OptionGroup var conn: Connection
        func run() throws { print(try conn.call("GET", "/v1/site").pretty) }
    }

    struct Apply: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Apply a site file: enable, disable, reconfigure and upgrade plugins without a restart.",
            discussion: "Everything is validated first; if anything is wrong nothing changes and every problem is listed with its key.")
        @OptionGroup var conn: Connection
        @Option(name: .customShort("f"), help: "Site file (JSON).") var file: String
        @Flag(name: .long, help: "Disable plugins even though they hold live state.") var force = false
        @Flag(name: .long, help: "Show what would change, change nothing.") var dryRun = false
        func run() throws {
            let j = try readJSONFile(file)
            let dir = URL(fileURLWithPath: file).deletingLastPathComponent().path
            var q = "?baseDir=\(dir.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? dir)"
            if force { q += "&force=true" }
            if dryRun { q += "&dryRun=true" }
            printChanges(try conn.call("PUT", "/v1/site\(q)", body: j))
        }
    }
}

// MARK: plugin check

struct PluginCmd: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "plugin", abstract: "Work with a plugin file (no daemon needed).", subcommands: [Check.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Load a plugin exactly as berthd would, validate it, create and destroy an instance, run its kinds' conformance cases.",
            discussion: "Exits non-zero on any problem. The state it needs lives in a temporary directory that is removed afterwards.")
        @Argument(help: "Path to the plugin's .so file") var path: String
        @Option(name: .long, help: "Configuration file (JSON object) to create the instance with. Default: {}.") var config: String?
        @Option(name: .long, help: "Instance name (default: the plugin's own name).") var name: String?
        @Option(name: .long, help: "Run only this kind's suite: network, storage, scheduler, discovery.") var kind: String?
        @Option(name: [.customShort("o"), .long], help: "Output format: table or json.") var output: OutputFormat = .table
        @Flag(name: .long, help: "Load the plugin into this process instead of a berth-plugin-runner (a crash then ends the check).") var inProcess = false

        func run() throws {
            let cfg = try config.map { try readJSONFile($0) } ?? .object([])
            let report = PluginChecker.check(path: path, name: name, config: cfg, kind: kind, inProcess: inProcess, extended: true)
            if output == .json {
                print(report.json.pretty)
            } else {
                if let p = report.plugin {
                    print("plugin   \(p.name) \(p.version) — \(p.summary)")
                    print("file     \(path)")
                    print("sha256   \(p.sha256)")
                    print("abi      1.\(p.abiMinor), kinds \(p.kinds), threads \(p.concurrent ? "concurrent" : "serial")")
                    print("")
                }
                table(["CASE", "RESULT", "DETAIL"], report.cases.map { [$0.name, $0.skipped ? "skip" : $0.passed ? "pass" : "FAIL", $0.detail] })
                print("")
                print(report.summary)
            }
            if report.failed > 0 { throw ExitCode(1) }
        }
    }
}

// MARK: events

struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the event log; --watch follows it.")
    @OptionGroup var conn: Connection
    @Option(name: .long, help: "Print events after this revision.") var since: Int = 0
    @Flag(name: .long, help: "Keep following new events.") var watch = false

    func line(_ e: JSON) -> [String] {
        let t = e["time"]?.double ?? 0
        let d = Date(timeIntervalSince1970: t)
        let f = ISO8601DateFormatter()
        return [str(e["rev"]), f.string(from: d), str(e["type"]), str(e["subject"]), str(e["actor"]), e["data"]?.serialized ?? ""]
    }

    func run() throws {
        if watch {
            let c = UnixHTTPConnection(path: conn.socketPath, timeoutSeconds: 0)
            try c.stream("/v1/events?since=\(since)&watch=true") { chunk in
                for l in String(decoding: chunk, as: UTF8.self).split(separator: "\n") where !l.isEmpty {
                    if conn.output == .json { print(l) } else if let e = try? JSON.parse(String(l)) { print(line(e).joined(separator: "  ")) }
                    fflush(stdout)
                }
                return true
            }
            return
        }
        let j = try conn.call("GET", "/v1/events?since=\(since)&limit=10000")
        emit(j, conn.output) { table(["REV", "TIME", "TYPE", "SUBJECT", "ACTOR", "DATA"], (j["events"]?.array ?? []).map(line)) }
    }
}

// MARK: network pools and attachments

struct NetworkOption: ParsableArguments {
    @Option(name: .long, help: "The network (a network plugin instance) to act on.") var network: String = "default"
}

struct Pools: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Administer a network's IP pools.", subcommands: [Import.self, List.self, Show.self, Delete.self, Move.self])

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create or update a pool from a JSON file (- for stdin).")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Option(name: .customShort("f"), help: "Pool file (JSON).") var file: String
        func run() throws {
            let pool = try readJSONFile(file)
            let pools = pool["pools"]?.array ?? [pool]
            for p in pools {
                let j = try conn.call("POST", "/v1/networks/\(net.network)/pools", body: p)
                emit(j, conn.output) { print("pool \(str(p["name"])) imported into network \(net.network)") }
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List pools with their free, reserved and active counts.")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        func run() throws {
            let j = try conn.call("GET", "/v1/networks/\(net.network)/pools")
            emit(j, conn.output) {
                table(["NAME", "SUBNETS", "VLAN", "NODES", "FREE", "RESERVED", "ACTIVE", "HELD"], (j["pools"]?.array ?? []).map { p in
                    [str(p["name"]), str(p["subnets"]), str(p["vlan"]), str(p["nodes"]), str(p["free"]), str(p["reserved"]), str(p["active"]), str(p["held"])]
                })
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a pool and the addresses in use or reserved.")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Argument var name: String
        func run() throws { print(try conn.call("GET", "/v1/networks/\(net.network)/pools/\(name)").pretty) }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a pool (refused while it has active addresses).")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Argument var name: String
        func run() throws {
            let j = try conn.call("DELETE", "/v1/networks/\(net.network)/pools/\(name)")
            emit(j, conn.output) { print("pool \(name) deleted") }
        }
    }

    struct Move: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move addresses between reserved and available.")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Option(name: .long) var pool: String
        @Option(name: .long, help: "reserved or available") var to: String
        @Argument(help: "Addresses") var addresses: [String]
        func run() throws {
            let j = try conn.call("POST", "/v1/networks/\(net.network)/addresses/move",
                                  body: ["pool": .string(pool), "to": .string(to), "addresses": .array(addresses.map { .string($0) })])
            print(j.pretty)
        }
    }
}

struct Attachments: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Network attachments: add, batch, delete, check, list, gc.",
                                                    subcommands: [Add.self, Batch.self, Del.self, CheckOne.self, List.self, GC.self, Capacity.self])

    struct Batch: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Allocate many attachments in one request and one commit (at most 1,024).",
            discussion: """
            FILE holds {"attachments": [{"containerID": ..., "ifname": ..., "node": ..., "pool": ..., "ips": [...], \
            "identity": {...}}, ...]} (or just the array); - reads stdin. Each item succeeds or fails alone; the exit \
            status is 1 when any item failed.
            """)
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Option(name: .customShort("f"), help: "Batch file (JSON), - for stdin.") var file: String
        func run() throws {
            let doc = try readJSONFile(file)
            let items = doc["attachments"]?.array ?? doc.array
            guard let items else { throw ValidationError("\(file): expected {\"attachments\": [...]} or an array of ADD requests") }
            let j = try conn.call("POST", "/v1/networks/\(net.network)/attachments/batch", body: ["attachments": .array(items)])
            let results = j["results"]?.array ?? []
            emit(j, conn.output) {
                table(["CONTAINER", "IFNAME", "RESULT"], zip(items, results).map { item, r in
                    let outcome = r["result"].map { res in (res["ips"]?.array ?? []).map { str($0["address"]) }.joined(separator: ", ") }
                        ?? "error \(str(r["status"])): \(str(r["error"]))"
                    return [str(item["containerID"]), item["ifname"]?.string ?? "eth0", outcome]
                })
                print("\(str(j["succeeded"])) succeeded, \(str(j["failed"])) failed")
            }
            if (j["failed"]?.int ?? 0) > 0 { throw ExitCode(1) }
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Allocate addresses for a container interface (idempotent).")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Option(name: .long) var container: String
        @Option(name: .long) var ifname: String = "eth0"
        @Option(name: .long) var node: String?
        @Option(name: .long) var pool: String?
        @Option(name: .long, help: "Request a specific address (repeatable).") var ip: [String] = []
        @Option(name: .long, help: "Stateful identity app/ordinal, e.g. web/0") var identity: String?
        @Option(name: .long, help: "onDelete, immutable or never") var releasePolicy: String?
        func run() throws {
            var body: JSON = ["containerID": .string(container), "ifname": .string(ifname)]
            if let node { body = body.setting("node", .string(node)) }
            if let pool { body = body.setting("pool", .string(pool)) }
            if !ip.isEmpty { body = body.setting("ips", .array(ip.map { .string($0) })) }
            if let identity {
                let parts = identity.split(separator: "/")
                guard parts.count == 2, let ord = Int(parts[1]) else { throw ValidationError("--identity must be APP/ORDINAL") }
                var id: JSON = ["app": .string(String(parts[0])), "ordinal": .number(Double(ord))]
                if let releasePolicy { id = id.setting("releasePolicy", .string(releasePolicy)) }
                body = body.setting("identity", id)
            }
            let j = try conn.call("POST", "/v1/networks/\(net.network)/attachments", body: body)
            emit(j, conn.output) {
                table(["ADDRESS", "GATEWAY", "MAC", "POOL", "VLAN"], (j["ips"]?.array ?? []).map { [str($0["address"]), str($0["gateway"]), str($0["mac"]), str($0["pool"]), str($0["vlan"])] })
            }
        }
    }

    struct Del: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "del", abstract: "Release a container interface's addresses (always succeeds).")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Option(name: .long) var container: String
        @Option(name: .long) var ifname: String = "eth0"
        @Flag(name: .long, help: "The identity is going away for good (scale-down, app deletion).") var final = false
        func run() throws {
            _ = try conn.call("DELETE", "/v1/networks/\(net.network)/attachments/\(container)/\(ifname)\(final ? "?final=true" : "")")
            print("released \(container)/\(ifname)")
        }
    }

    struct CheckOne: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "check", abstract: "Verify an attachment's reservation.")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Option(name: .long) var container: String
        @Option(name: .long) var ifname: String = "eth0"
        func run() throws { print(try conn.call("GET", "/v1/networks/\(net.network)/attachments/\(container)/\(ifname)").pretty) }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a network's attachments.")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        func run() throws {
            let j = try conn.call("GET", "/v1/networks/\(net.network)/attachments")
            emit(j, conn.output) {
                table(["CONTAINER", "IFNAME", "NODE", "ADDRESSES"], (j["attachments"]?.array ?? []).map {
                    [str($0["containerID"]), str($0["ifname"]), str($0["node"]), ($0["result"]?["ips"]?.array ?? []).map { str($0["address"]) }.joined(separator: ",")]
                })
            }
        }
    }

    struct GC: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "gc", abstract: "Release every attachment not listed (CONTAINER[/IFNAME]...).")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Argument var valid: [String] = []
        func run() throws {
            let list = JSON.array(valid.map { v in
                let p = v.split(separator: "/")
                return ["containerID": .string(String(p[0])), "ifname": .string(p.count > 1 ? String(p[1]) : "eth0")]
            })
            print(try conn.call("POST", "/v1/networks/\(net.network)/gc", body: ["valid": list]).pretty)
        }
    }

    struct Capacity: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Free, reserved and active addresses (optionally for one node).")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Option(name: .long) var node: String?
        func run() throws {
            print(try conn.call("GET", "/v1/networks/\(net.network)/capacity\(node.map { "?node=\($0)" } ?? "")").pretty)
        }
    }
}
