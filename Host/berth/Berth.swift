// berth — the Berth command line: talks to berthd over its unix socket, and checks plugins without a daemon.
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import ArgumentParser
import BerthCore
import BerthWire
import Foundation

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
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
        discussion: """
        Commands that talk to berthd use its unix socket (--socket or $BERTH_SOCKET), or a remote berthd's TCP API \
        (--server URL or $BERTH_SERVER, with --token-file, --token, $BERTH_TOKEN or $BERTH_TOKEN_FILE). Every command \
        prints -o table (default), json or yaml. `berth plugin check` needs no daemon. Reference: docs/cli.md; shell \
        completion: berth --generate-completion-script bash|zsh|fish.
        """,
        version: BerthVersion.current,
        subcommands: [Status.self, Plugins.self, PluginCmd.self, Events.self, Networks.self, Pools.self, Attachments.self, Identities.self,
                      Site.self, Storage.self, Volumes.self, Nodes.self, ApplyCmd.self, GetCmd.self, DeleteCmd.self, Instances.self, LogsCmd.self, ExecCmd.self, BackupCmd.self])
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show whether berthd is up and how many plugins it runs.")
    @OptionGroup var conn: Connection
    func run() throws {
        var j = try conn.call("GET", "/healthz")
        // A failed plugin is not "ok": name each one with its reason, and exit 1.
        let failed = (j["plugins"]?["failed"]?.int ?? 0) > 0
            ? (try conn.call("GET", "/v1/plugins"))["plugins"]?.array?.filter { $0["state"]?.string == "failed" } ?? [] : []
        if !failed.isEmpty { j = j.setting("status", "degraded").setting("failedPlugins", .array(failed)) }
        emit(j, conn.output) {
            print("berthd \(str(j["status"])) — site \(str(j["site"])), plugins loaded \(str(j["plugins"]?["loaded"])), failed \(str(j["plugins"]?["failed"]))")
            if let st = j["store"] {
                let endpoints = st["endpoints"]?.array?.compactMap(\.string).joined(separator: ",")
                print("store \(str(st["engine"]))\(st["path"]?.string.map { " \($0)" } ?? "")\(endpoints.map { " \($0)" } ?? "")")
                if let c = st["cluster"] {
                    let members = (c["members"]?.array ?? []).map { "\(str($0["node"]))\($0["live"]?.bool == true ? "" : " (down)")" }
                    print("node \(str(c["node"])), scheduling leader \(c["leader"]?.string ?? "none (election in progress)")")
                    print("members \(members.joined(separator: ", "))")
                    if let e = c["etcd"], !e.isNull {
                        print("etcd \(str(e["version"])), members \((e["members"]?.array ?? []).map { str($0["name"]) }.joined(separator: ", "))")
                    }
                }
            }
            for p in failed { print("plugin \(str(p["name"])) failed: \(str(p["reason"]))") }
        }
        if !failed.isEmpty { throw ExitCode(1) }
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
        func run() throws { printChanges(try conn.call("POST", api("v1", "plugins", name, "enable")), conn.output) }
    }

    struct Disable: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Disable a plugin (refused while it holds live state, unless --force).")
        @OptionGroup var conn: Connection
        @Argument(help: "Plugin name") var name: String
        @Flag(name: .long, help: "Disable even though it holds live state.") var force = false
        func run() throws { printChanges(try conn.call("POST", api("v1", "plugins", name, "disable", query: [("force", force ? "true" : nil)])), conn.output) }
    }

    struct Reload: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Re-read a plugin's file: a new instance (a new build is an upgrade); the old one drains.")
        @OptionGroup var conn: Connection
        @Argument(help: "Plugin name") var name: String
        func run() throws { printChanges(try conn.call("POST", api("v1", "plugins", name, "reload")), conn.output) }
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
            let j = try conn.call("GET", api("v1", "plugins", name))
            emit(j, conn.output) {
                for (k, v) in j.object ?? [] {
                    print("\(k):".padding(toLength: 20, withPad: " ", startingAt: 0) + (k == "config" || k == "configSchema" ? v.serialized : str(v)))
                }
            }
        }
    }
}

func printChanges(_ j: JSON, _ format: OutputFormat) {
    emit(j, format) {
        let changes = j["changes"]?.array ?? []
        table(["PLUGIN", "ACTION", "DETAIL"], changes.map { [str($0["plugin"]), str($0["action"]), str($0["detail"])] })
    }
}

struct Site: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show or apply the site configuration at run time.", subcommands: [Show.self, Apply.self])

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the running site configuration.")
        @OptionGroup var conn: Connection
        func run() throws {
            let j = try conn.call("GET", "/v1/site")
            // The site is a nested document: its table form is the JSON itself.
            emit(j, conn.output) { print(j.pretty) }
        }
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
            let path = api("v1", "site", query: [("baseDir", dir), ("force", force ? "true" : nil), ("dryRun", dryRun ? "true" : nil)])
            printChanges(try conn.call("PUT", path, body: j), conn.output)
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
        @Option(name: .long, help: "Run only this kind's suite: network, storage, scheduler, discovery, runtime.") var kind: String?
        @Option(name: .long, help: "Runtime suite: a root filesystem directory with /bin/sleep to start test instances from.") var rootfs: String?
        @Option(name: [.customShort("o"), .long], help: "Output format: table or json.") var output: OutputFormat = .table
        @Flag(name: .long, help: "Load the plugin into this process instead of a berth-plugin-runner (a crash then ends the check).") var inProcess = false
        @Option(name: .long, help: "Keep the plugin's state in etcd instead of a temporary SQLite store: etcd://HOST:PORT[,HOST:PORT…] (under a fresh key prefix, removed at the end).") var store: String?

        func validate() throws {
            if let store {
                do { _ = try EtcdSettings.endpoints(fromStoreURL: store) } catch let e as BerthError { throw ValidationError("--store: \(e.message)") }
            }
        }

        func run() throws {
            let cfg = try config.map { try readJSONFile($0) } ?? .object([])
            let report = PluginChecker.check(path: path, name: name, config: cfg, kind: kind, inProcess: inProcess, extended: true, rootfs: rootfs,
                                             store: store)
            if output != .table {
                emit(report.json, output) {}
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
    static let configuration = CommandConfiguration(
        abstract: "Print the event log; --watch follows it; --type and --subject filter it.",
        discussion: """
        --type network matches network.attached, network.detached, ... (a type or a dotted prefix); --subject \
        StatefulApp/db matches StatefulApp/db and StatefulApp/db/0 (a subject or a /-separated prefix).
        """)
    @OptionGroup var conn: Connection
    @Option(name: .long, help: "Print events after this revision.") var since: Int = 0
    @Option(name: .long, help: "Only events of this type, or of types under it (network: network.attached, ...).") var type: String?
    @Option(name: .long, help: "Only events about this subject, or subjects under it (StatefulApp/db: StatefulApp/db/0, ...).") var subject: String?
    @Option(name: .long, help: "At most this many events (1..10000).") var limit: Int = 10000
    @Flag(name: .long, help: "Keep following new events.") var watch = false

    func line(_ e: JSON) -> [String] {
        let t = e["time"]?.double ?? 0
        let d = Date(timeIntervalSince1970: t)
        let f = ISO8601DateFormatter()
        return [str(e["rev"]), f.string(from: d), str(e["type"]), str(e["subject"]), str(e["actor"]), e["data"]?.serialized ?? ""]
    }

    func validate() throws {
        guard since >= 0 else { throw ValidationError("--since must be a revision number (0 or more), not \(since)") }
        guard (1...10000).contains(limit) else { throw ValidationError("--limit must be between 1 and 10000, not \(limit)") }
    }

    func run() throws {
        let filters: [(String, String?)] = [("limit", String(limit)), ("type", type), ("subject", subject)]
        guard watch else {
            let j = try conn.call("GET", api("v1", "events", query: [("since", String(since))] + filters))
            emit(j, conn.output) { table(["REV", "TIME", "TYPE", "SUBJECT", "ACTOR", "DATA"], (j["events"]?.array ?? []).map(line)) }
            return
        }
        try conn.followEvents(since: since, query: filters) { text in
            switch conn.output {
            case .json: print(text)
            case .yaml: if let e = try? JSON.parse(text) { print("---\n" + yaml(e), terminator: "") }
            case .table: if let e = try? JSON.parse(text) { print(line(e).joined(separator: "  ")) }
            }
            fflush(stdout)
        }
    }
}
