// berth networks | pools | attachments | identities — network plugins through berthd's API. Without --network a
// command uses $BERTH_NETWORK, else the only network plugin loaded.
import ArgumentParser
import BerthWire
import Foundation

struct Networks: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the networks (network plugins loaded) and show one's status.",
                                                    subcommands: [List.self, Status.self, ReleaseNode.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the network plugins berthd has loaded.")
        @OptionGroup var conn: Connection
        func run() throws {
            let j = try conn.call("GET", "/v1/networks")
            emit(j, conn.output) {
                table(["NAME", "PLUGIN", "VERSION", "STATE"], (j["networks"]?.array ?? []).map { [str($0["name"]), str($0["plugin"]), str($0["version"]), str($0["state"])] })
            }
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Whether a network can allocate addresses now (CNI STATUS).")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        func run() throws {
            let j = try conn.call("GET", api("v1", "networks", try net.name(conn), "status"))
            emit(j, conn.output) { printFields(j) }
        }
    }

    struct ReleaseNode: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "release-node",
            abstract: "Release every address a network holds for a node that is gone for good (its attachments are forgotten).")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Argument(help: "The node whose addresses to release.") var node: String
        func run() throws {
            let network = try net.name(conn)
            let j = try conn.call("POST", api("v1", "networks", network, "nodes", node, "release"))
            emit(j, conn.output) {
                print("node \(node): its addresses in network \(network) are released")
                printFields(j)
            }
        }
    }
}

private let poolHeader = ["NAME", "SUBNETS", "VLAN", "NODES", "FREE", "RESERVED", "ACTIVE", "HELD"]
private func poolRow(_ p: JSON) -> [String] {
    [str(p["name"]), str(p["subnets"]), str(p["vlan"]), str(p["nodes"]), str(p["free"]), str(p["reserved"]), str(p["active"]), str(p["held"])]
}

struct Pools: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Administer a network's IP pools.", subcommands: [Import.self, List.self, Show.self, Delete.self, Move.self])

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create or update a pool from a JSON file (- for stdin).")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Option(name: .customShort("f"), help: "Pool file (JSON): one pool, or {\"pools\": [...]}.") var file: String
        func run() throws {
            let pool = try readJSONFile(file)
            let pools = pool["pools"]?.array ?? [pool]
            let network = try net.name(conn)
            var results: [JSON] = []
            for p in pools {
                results.append(try conn.call("POST", api("v1", "networks", network, "pools"), body: p))
                if conn.output == .table { print("pool \(str(p["name"])) imported into network \(network)") }
            }
            if conn.output != .table { emit(results.count == 1 ? results[0] : .array(results), conn.output) {} }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List pools with their free, reserved and active counts.")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        func run() throws {
            let j = try conn.call("GET", api("v1", "networks", try net.name(conn), "pools"))
            emit(j, conn.output) {
                table(poolHeader, (j["pools"]?.array ?? []).map(poolRow))
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a pool and the addresses in use or reserved.")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Argument(help: "The pool's name.") var name: String
        func run() throws {
            let j = try conn.call("GET", api("v1", "networks", try net.name(conn), "pools", name))
            emit(j, conn.output) {
                table(poolHeader, [poolRow(j["counts"] ?? .null)])
                let addrs = j["addresses"]?.array ?? []
                print("")
                if addrs.isEmpty { print("no address in use or reserved") }
                else {
                    table(["ADDRESS", "STATE", "PREVIOUS", "CONTAINER", "IFNAME", "IDENTITY"], addrs.map { a in
                        [str(a["address"]), str(a["state"]), str(a["previous"]), str(a["containerID"]), str(a["ifname"]),
                         a["app"] == nil ? "-" : "\(str(a["app"]))/\(str(a["ordinal"]))"]
                    })
                }
            }
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a pool (refused while it has active addresses).")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Argument(help: "The pool's name.") var name: String
        func run() throws {
            let j = try conn.call("DELETE", api("v1", "networks", try net.name(conn), "pools", name))
            emit(j, conn.output) { print("pool \(name) deleted") }
        }
    }

    struct Move: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Move addresses between reserved and available.")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Option(name: .long, help: "The pool the addresses belong to.") var pool: String
        @Option(name: .long, help: "reserved or available") var to: String
        @Argument(help: "Addresses") var addresses: [String]
        func run() throws {
            let j = try conn.call("POST", api("v1", "networks", try net.name(conn), "addresses", "move"),
                                  body: ["pool": .string(pool), "to": .string(to), "addresses": .array(addresses.map { .string($0) })])
            emit(j, conn.output) { printFields(j) }
        }
    }
}

struct Attachments: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Network attachments: add, batch, delete, check, list, gc, capacity.",
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
            let j = try conn.call("POST", api("v1", "networks", try net.name(conn), "attachments", "batch"), body: ["attachments": .array(items)])
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
        @Option(name: .long, help: "The container's id.") var container: String
        @Option(name: .long, help: "The interface inside the container.") var ifname: String = "eth0"
        @Option(name: .long, help: "The node the container runs on.") var node: String?
        @Option(name: .long, help: "Allocate from this pool (default: the network's choice).") var pool: String?
        @Option(name: .long, help: "Request a specific address (repeatable).") var ip: [String] = []
        @Option(name: .long, help: "Stateful identity app/ordinal, e.g. web/0") var identity: String?
        @Option(name: .long, help: "onDelete, immutable or never") var releasePolicy: String?
        @Flag(name: .long, help: "Let a request without --identity take a reserved address named with --ip.") var useReserved = false
        func run() throws {
            var body: JSON = ["containerID": .string(container), "ifname": .string(ifname)]
            if useReserved { body = body.setting("useReserved", true) }
            if let node { body = body.setting("node", .string(node)) }
            if let pool { body = body.setting("pool", .string(pool)) }
            if !ip.isEmpty { body = body.setting("ips", .array(ip.map { .string($0) })) }
            if let identity {
                // APP may hold a '/' itself (a Kubernetes StatefulSet through CNI is "<namespace>/<set>").
                guard let slash = identity.lastIndex(of: "/"), slash > identity.startIndex,
                      let ord = Int(identity[identity.index(after: slash)...]) else { throw ValidationError("--identity must be APP/ORDINAL") }
                var id: JSON = ["app": .string(String(identity[..<slash])), "ordinal": .number(Double(ord))]
                if let releasePolicy { id = id.setting("releasePolicy", .string(releasePolicy)) }
                body = body.setting("identity", id)
            }
            let j = try conn.call("POST", api("v1", "networks", try net.name(conn), "attachments"), body: body)
            emit(j, conn.output) {
                table(["ADDRESS", "GATEWAY", "MAC", "POOL", "VLAN"], (j["ips"]?.array ?? []).map { [str($0["address"]), str($0["gateway"]), str($0["mac"]), str($0["pool"]), str($0["vlan"])] })
            }
        }
    }

    struct Del: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "del", abstract: "Release a container interface's addresses (always succeeds).")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Option(name: .long, help: "The container's id.") var container: String
        @Option(name: .long, help: "The interface inside the container.") var ifname: String = "eth0"
        @Flag(name: .long, help: "The identity is going away for good (scale-down, app deletion).") var final = false
        func run() throws {
            let j = try conn.call("DELETE", api("v1", "networks", try net.name(conn), "attachments", container, ifname,
                                                query: [("final", final ? "true" : nil)]))
            emit(j, conn.output) { print("released \(container)/\(ifname)") }
        }
    }

    struct CheckOne: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "check", abstract: "Verify an attachment's reservation.")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Option(name: .long, help: "The container's id.") var container: String
        @Option(name: .long, help: "The interface inside the container.") var ifname: String = "eth0"
        func run() throws {
            let j = try conn.call("GET", api("v1", "networks", try net.name(conn), "attachments", container, ifname))
            emit(j, conn.output) {
                printFields(j, skip: ["ips"])
                table(["ADDRESS", "GATEWAY", "MAC", "POOL", "VLAN"], (j["ips"]?.array ?? []).map { [str($0["address"]), str($0["gateway"]), str($0["mac"]), str($0["pool"]), str($0["vlan"])] })
            }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a network's attachments.")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        func run() throws {
            let j = try conn.call("GET", api("v1", "networks", try net.name(conn), "attachments"))
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
        @Argument(help: "The attachments to keep, CONTAINER or CONTAINER/IFNAME (IFNAME defaults to eth0).") var valid: [String] = []
        func run() throws {
            let list = JSON.array(valid.map { v in
                let p = v.split(separator: "/", maxSplits: 1)
                return ["containerID": .string(String(p.first ?? "")), "ifname": .string(p.count > 1 ? String(p[1]) : "eth0")]
            })
            let j = try conn.call("POST", api("v1", "networks", try net.name(conn), "gc"), body: ["valid": list])
            emit(j, conn.output) { printFields(j) }
        }
    }

    struct Capacity: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Free, reserved and active addresses (optionally for one node).")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Option(name: .long, help: "Only the pools this node may use.") var node: String?
        func run() throws {
            let j = try conn.call("GET", api("v1", "networks", try net.name(conn), "capacity", query: [("node", node)]))
            emit(j, conn.output) {
                let pools = j["pools"]?.array ?? []
                printFields(j, skip: ["pools"])
                if !pools.isEmpty {
                    print("")
                    table(["POOL", "FREE", "RESERVED", "ACTIVE", "HELD"], pools.map { [str($0["name"]), str($0["free"]), str($0["reserved"]), str($0["active"]), str($0["held"])] })
                }
            }
        }
    }
}

struct Identities: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stateful identities (APP/ORDINAL) a network holds addresses for.",
                                                    subcommands: [Release.self])

    struct Release: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Release the addresses a network keeps for a stateful identity (APP/ORDINAL), e.g. after scaling down for good.")
        @OptionGroup var conn: Connection
        @OptionGroup var net: NetworkOption
        @Argument(help: "The identity, APP/ORDINAL (e.g. db/2).") var identity: String
        @Flag(name: .long, help: "Release it even while an attachment still uses it.") var force = false
        func run() throws {
            let parts = identity.split(separator: "/", omittingEmptySubsequences: false)
            guard parts.count == 2, !parts[0].isEmpty, let ord = Int(parts[1]), ord >= 0 else {
                throw ValidationError("identity \"\(identity)\": expected APP/ORDINAL, e.g. db/2")
            }
            var body: JSON = ["app": .string(String(parts[0])), "ordinal": .number(Double(ord))]
            if force { body = body.setting("force", true) }
            let j = try conn.call("POST", api("v1", "networks", try net.name(conn), "identities", "release"), body: body)
            emit(j, conn.output) {
                print("identity \(identity) released")
                printFields(j)
            }
        }
    }
}
