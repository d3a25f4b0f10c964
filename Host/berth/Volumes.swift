// berth storage | volumes — CSI-style volumes of a storage plugin: create, list, show, delete, publish, unpublish,
// expand, capacity and snapshots. Volumes are named by id or by name; without --storage a command uses
// $BERTH_STORAGE, else the only storage plugin loaded.
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import ArgumentParser
import BerthCore
import BerthWire
import Foundation

/// "64Mi", "1Gi", "500M", "4096" -> bytes.
func parseSize(_ s: String) throws -> Int {
    let units: [(String, Int)] = [("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40),
                                  ("K", 1000), ("M", 1_000_000), ("G", 1_000_000_000), ("T", 1_000_000_000_000), ("B", 1)]
    for (u, m) in units where s.hasSuffix(u) {
        if let n = Int(s.dropLast(u.count)), n >= 0 { return n * m }
    }
    guard let n = Int(s), n >= 0 else { throw ValidationError("size \"\(s)\" is not a number of bytes (e.g. 4096, 64Mi, 1Gi)") }
    return n
}

func humanBytes(_ j: JSON?) -> String {
    guard let n = j?.double else { return "-" }
    for (u, m) in [("Ti", 1099511627776.0), ("Gi", 1073741824.0), ("Mi", 1048576.0), ("Ki", 1024.0)] where n >= m {
        let v = n / m
        return (v.rounded() == v ? String(Int(v)) : String(format: "%.1f", v)) + u
    }
    return String(Int(n))
}

/// A volume named by its id or by its name: the id when berthd knows it; else the one volume with that name; else
/// the text as given (so that, as CSI says, deleting an unknown id succeeds and a show says it does not exist).
func volumeID(_ conn: Connection, _ plugin: String, _ ref: String) throws -> String {
    let (resp, _) = try conn.fetch("GET", api("v1", "storage", plugin, "volumes", ref))
    guard resp.status == 404 || resp.status == 400 else { return ref }
    var ids: [String] = []
    var token: String? = nil
    repeat {
        let j = try conn.call("GET", api("v1", "storage", plugin, "volumes", query: [("limit", "1000"), ("pageToken", token)]))
        ids += (j["volumes"]?.array ?? []).filter { $0["name"]?.string == ref }.compactMap { $0["volumeId"]?.string }
        token = j["nextPageToken"]?.string
    } while token != nil
    guard ids.count <= 1 else {
        throw CLIError("\(ids.count) volumes of \(plugin) are named \"\(ref)\" (\(ids.joined(separator: ", "))): name one by its id")
    }
    return ids.first ?? ref
}

func volumeRow(_ v: JSON) -> [String] {
    let nodes = (v["nodes"]?.array ?? []).map { n -> String in
        "\(str(n["node"]))\(n["staged"]?.bool == true ? "+staged" : ""):\(str(n["refCount"]))"
    }
    return [str(v["volumeId"]), str(v["name"]), humanBytes(v["capacityBytes"]), str(v["volumeMode"]), str(v["accessMode"]),
            nodes.isEmpty ? "-" : nodes.joined(separator: ",")]
}

func printVolume(_ v: JSON) {
    for k in ["volumeId", "name", "capacityBytes", "volumeMode", "accessMode", "parameters", "source", "accessibleTopology"] {
        guard let x = v[k], !x.isNull else { continue }
        let text = k == "capacityBytes" ? "\(str(x)) (\(humanBytes(x)))" : (x.object != nil || x.array != nil ? x.serialized : str(x))
        print("\(k):".padding(toLength: 20, withPad: " ", startingAt: 0) + text)
    }
    let nodes = v["nodes"]?.array ?? []
    if nodes.isEmpty { print("nodes:".padding(toLength: 20, withPad: " ", startingAt: 0) + "(not published)") }
    for n in nodes {
        print("node \(str(n["node"])):".padding(toLength: 20, withPad: " ", startingAt: 0)
              + "controller-published\(n["readonly"]?.bool == true ? " (read-only)" : ""), \(n["staged"]?.bool == true ? "staged at \(str(n["stagingPath"]))" : "not staged"), \(str(n["refCount"])) target(s)")
        for t in n["targets"]?.array ?? [] {
            print("".padding(toLength: 22, withPad: " ", startingAt: 0) + "\(str(t["target"]))\(t["readonly"]?.bool == true ? " (ro)" : "")")
        }
    }
}

struct Volumes: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "CSI-style volumes of a storage plugin: create, publish to a node and a target, snapshot, expand.",
        subcommands: [Create.self, List.self, Show.self, Delete.self, Publish.self, Unpublish.self, Expand.self, Validate.self, Capacity.self,
                      Snapshot.self])

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a volume (idempotent by name: the same request returns the same volume).")
        @OptionGroup var conn: Connection
        @OptionGroup var sp: StorageOption
        @Argument(help: "Volume name (at most 128 bytes, no / or ..)") var name: String
        @Option(name: .long, help: "Capacity, e.g. 64Mi, 1Gi (default: the plugin's default).") var size: String?
        @Option(name: .long, help: "Largest acceptable capacity.") var limit: String?
        @Option(name: .long, help: "mount (a directory) or block (a device-like file).") var mode: String = "mount"
        @Option(name: .long, help: "Access mode: \(storageAccessModes.joined(separator: ", ")).") var access: String = "single-node-writer"
        @Option(name: .long, help: "Plugin parameter KEY=VALUE (repeatable).") var param: [String] = []
        @Option(name: .long, help: "Restore from this snapshot id.") var fromSnapshot: String?
        @Option(name: .long, help: "Clone this volume (id or name).") var fromVolume: String?
        @Option(name: .long, help: "Requisite node (repeatable): the volume must be accessible from one of them.") var node: [String] = []
        func run() throws {
            var body: JSON = ["name": .string(name), "volumeMode": .string(mode), "accessMode": .string(access)]
            if let size { body = body.setting("capacityBytes", JSON(Int64(try parseSize(size)))) }
            if let limit { body = body.setting("limitBytes", JSON(Int64(try parseSize(limit)))) }
            if !param.isEmpty {
                body = body.setting("parameters", .object(try param.map { p in
                    guard let eq = p.firstIndex(of: "=") else { throw ValidationError("--param \"\(p)\" must be KEY=VALUE") }
                    return (String(p[..<eq]), .string(String(p[p.index(after: eq)...])))
                }))
            }
            if let fromSnapshot { body = body.setting("source", ["snapshotId": .string(fromSnapshot)]) }
            if let fromVolume { body = body.setting("source", ["volumeId": .string(try volumeID(conn, try sp.name(conn), fromVolume))]) }
            if !node.isEmpty { body = body.setting("topology", ["requisite": .array(node.map { ["node": .string($0)] })]) }
            let v = try conn.call("POST", api("v1", "storage", try sp.name(conn), "volumes"), body: body)
            emit(v, conn.output) { printVolume(v) }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List volumes with their nodes (node[+staged]:targets).")
        @OptionGroup var conn: Connection
        @OptionGroup var sp: StorageOption
        @Option(name: .long, help: "Volumes per page (1..1000).") var limit: Int?
        @Option(name: .long, help: "Continue from this page token (printed after a partial page).") var pageToken: String?
        func run() throws {
            let j = try conn.call("GET", api("v1", "storage", try sp.name(conn), "volumes", query: [("limit", limit.map(String.init)), ("pageToken", pageToken)]))
            emit(j, conn.output) {
                table(["ID", "NAME", "SIZE", "MODE", "ACCESS", "NODES"], (j["volumes"]?.array ?? []).map(volumeRow))
                if let t = j["nextPageToken"]?.string { print("\nmore: --page-token \(t)") }
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a volume: its nodes, staging, targets and reference counts.")
        @OptionGroup var conn: Connection
        @OptionGroup var sp: StorageOption
        @Argument(help: "The volume's id or name.") var id: String
        func run() throws {
            let plugin = try sp.name(conn)
            let v = try conn.call("GET", api("v1", "storage", plugin, "volumes", try volumeID(conn, plugin, id)))
            emit(v, conn.output) { printVolume(v) }
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a volume and its data (refused while published; unknown ids succeed).")
        @OptionGroup var conn: Connection
        @OptionGroup var sp: StorageOption
        @Argument(help: "The volume's id or name.") var id: String
        func run() throws {
            let plugin = try sp.name(conn)
            let j = try conn.call("DELETE", api("v1", "storage", plugin, "volumes", try volumeID(conn, plugin, id)))
            emit(j, conn.output) { print("volume \(id) deleted") }
        }
    }

    struct Publish: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish a volume at a target path on a node: controller publish, stage (once per node), publish.",
            discussion: "--step runs one step only (controller, stage or node), for orchestrators that drive the steps themselves.")
        @OptionGroup var conn: Connection
        @OptionGroup var sp: StorageOption
        @Argument(help: "The volume's id or name.") var id: String
        @Option(name: .long, help: "Node to publish to.") var node: String
        @Option(name: .long, help: "Target path (a directory for mount volumes, a file for block volumes).") var target: String?
        @Flag(name: .long, help: "Publish read-only.") var readonly = false
        @Option(name: .long, help: "all (default), controller, stage or node.") var step: String = "all"
        func run() throws {
            let plugin = try sp.name(conn)
            let vid = try volumeID(conn, plugin, id)
            func base(_ action: String) -> String { api("v1", "storage", plugin, "volumes", vid, action) }
            let absTarget = target.map { $0.hasPrefix("/") ? $0 : FileManager.default.currentDirectoryPath + "/" + $0 }
            let j: JSON
            switch step {
            case "all", "node":
                guard let absTarget else { throw ValidationError("--target is required") }
                j = try conn.call("POST", base(step == "all" ? "publish" : "node-publish"),
                                  body: ["node": .string(node), "target": .string(absTarget), "readonly": .bool(readonly)])
            case "controller":
                j = try conn.call("POST", base("controller-publish"), body: ["node": .string(node), "readonly": .bool(readonly)])
            case "stage":
                j = try conn.call("POST", base("stage"), body: ["node": .string(node)])
            default:
                throw ValidationError("--step must be all, controller, stage or node")
            }
            emit(j, conn.output) { printVolume(j) }
        }
    }

    struct Unpublish: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Unpublish a target; when it was the node's last, unstage and controller-unpublish too.",
            discussion: """
            With --node and no --target, tears down the node's staging and controller publication if no target is left. \
            --step runs one step only: node (node-unpublish --target), stage (unstage --node) or controller \
            (controller-unpublish --node), for orchestrators that drive the steps themselves.
            """)
        @OptionGroup var conn: Connection
        @OptionGroup var sp: StorageOption
        @Argument(help: "The volume's id or name.") var id: String
        @Option(name: .long, help: "The target path to unpublish.") var target: String?
        @Option(name: .long, help: "The node to tear down (unstage, controller-unpublish) once no target is left.") var node: String?
        @Option(name: .long, help: "all (default), node, stage or controller.") var step: String = "all"
        func run() throws {
            var body: JSON = .object([])
            if let target { body = body.setting("target", .string(target.hasPrefix("/") ? target : FileManager.default.currentDirectoryPath + "/" + target)) }
            if let node { body = body.setting("node", .string(node)) }
            let action: String
            switch step {
            case "all":
                guard target != nil || node != nil else { throw ValidationError("give --target, --node or both") }
                action = "unpublish"
            case "node":
                guard target != nil, node == nil else { throw ValidationError("--step node takes --target (and no --node)") }
                action = "node-unpublish"
            case "stage", "controller":
                guard node != nil, target == nil else { throw ValidationError("--step \(step) takes --node (and no --target)") }
                action = step == "stage" ? "unstage" : "controller-unpublish"
            default:
                throw ValidationError("--step must be all, node, stage or controller, not \"\(step)\"")
            }
            let plugin = try sp.name(conn)
            let j = try conn.call("POST", api("v1", "storage", plugin, "volumes", try volumeID(conn, plugin, id), action), body: body)
            emit(j, conn.output) { printVolume(j) }
        }
    }

    struct Validate: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Ask the plugin whether a volume supports an access mode, volume mode and parameters.")
        @OptionGroup var conn: Connection
        @OptionGroup var sp: StorageOption
        @Argument(help: "The volume's id or name.") var id: String
        @Option(name: .long, help: "Access mode: \(storageAccessModes.joined(separator: ", ")).") var access: String = "single-node-writer"
        @Option(name: .long, help: "mount or block.") var mode: String = "mount"
        @Option(name: .long, help: "Plugin parameter KEY=VALUE (repeatable).") var param: [String] = []
        func run() throws {
            var body: JSON = ["accessMode": .string(access), "volumeMode": .string(mode)]
            if !param.isEmpty {
                body = body.setting("parameters", .object(try param.map { p in
                    guard let eq = p.firstIndex(of: "=") else { throw ValidationError("--param \"\(p)\" must be KEY=VALUE") }
                    return (String(p[..<eq]), .string(String(p[p.index(after: eq)...])))
                }))
            }
            let plugin = try sp.name(conn)
            let j = try conn.call("POST", api("v1", "storage", plugin, "volumes", try volumeID(conn, plugin, id), "validate"), body: body)
            emit(j, conn.output) { printFields(j) }
        }
    }

    struct Expand: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Grow a volume to at least the given size.")
        @OptionGroup var conn: Connection
        @OptionGroup var sp: StorageOption
        @Argument(help: "The volume's id or name.") var id: String
        @Option(name: .long, help: "New size, e.g. 128Mi.") var size: String
        func run() throws {
            let plugin = try sp.name(conn)
            let j = try conn.call("POST", api("v1", "storage", plugin, "volumes", try volumeID(conn, plugin, id), "expand"),
                                  body: ["capacityBytes": JSON(Int64(try parseSize(size)))])
            emit(j, conn.output) { print("volume \(id) is now \(humanBytes(j["capacityBytes"])) (\(str(j["capacityBytes"])) bytes)") }
        }
    }

    struct Capacity: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Total, used and available capacity of the storage plugin.")
        @OptionGroup var conn: Connection
        @OptionGroup var sp: StorageOption
        @Option(name: .long, help: "Capacity as seen from this node.") var node: String?
        func run() throws {
            let j = try conn.call("GET", api("v1", "storage", try sp.name(conn), "capacity", query: [("node", node)]))
            emit(j, conn.output) {
                table(["TOTAL", "USED", "AVAILABLE", "MAX VOLUME"],
                      [[humanBytes(j["totalCapacity"]), humanBytes(j["usedBytes"]), humanBytes(j["availableCapacity"]), humanBytes(j["maximumVolumeSize"])]])
            }
        }
    }

    struct Snapshot: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Snapshots: create, list, show, delete. Restore with `volumes create --from-snapshot`.",
                                                        subcommands: [SnapCreate.self, SnapList.self, SnapShow.self, SnapDelete.self])

        struct SnapShow: ParsableCommand {
            static let configuration = CommandConfiguration(commandName: "show", abstract: "Show a snapshot.")
            @OptionGroup var conn: Connection
            @OptionGroup var sp: StorageOption
            @Argument(help: "The snapshot's id.") var id: String
            func run() throws {
                let j = try conn.call("GET", api("v1", "storage", try sp.name(conn), "snapshots", id))
                emit(j, conn.output) { printFields(j) }
            }
        }

        struct SnapCreate: ParsableCommand {
            static let configuration = CommandConfiguration(commandName: "create", abstract: "Snapshot a volume (idempotent by name).")
            @OptionGroup var conn: Connection
            @OptionGroup var sp: StorageOption
            @Argument(help: "Snapshot name") var name: String
            @Option(name: .long, help: "Source volume, by id or name.") var volume: String
            func run() throws {
                let plugin = try sp.name(conn)
                let j = try conn.call("POST", api("v1", "storage", plugin, "snapshots"),
                                      body: ["name": .string(name), "sourceVolumeId": .string(try volumeID(conn, plugin, volume))])
                emit(j, conn.output) { print("snapshot \(str(j["snapshotId"])) (\(str(j["name"]))) of \(str(j["sourceVolumeId"])), \(humanBytes(j["sizeBytes"]))") }
            }
        }

        struct SnapList: ParsableCommand {
            static let configuration = CommandConfiguration(commandName: "list", abstract: "List snapshots.")
            @OptionGroup var conn: Connection
            @OptionGroup var sp: StorageOption
            @Option(name: .long, help: "Only snapshots of this volume (id or name).") var volume: String?
            @Option(name: .long, help: "Snapshots per page (1..1000).") var limit: Int?
            @Option(name: .long, help: "Continue from this page token (printed after a partial page).") var pageToken: String?
            func run() throws {
                let plugin = try sp.name(conn)
                let source = try volume.map { try volumeID(conn, plugin, $0) }
                let j = try conn.call("GET", api("v1", "storage", plugin, "snapshots",
                                                 query: [("sourceVolumeId", source), ("limit", limit.map(String.init)), ("pageToken", pageToken)]))
                emit(j, conn.output) {
                    table(["ID", "NAME", "SOURCE", "SIZE"], (j["snapshots"]?.array ?? []).map {
                        [str($0["snapshotId"]), str($0["name"]), str($0["sourceVolumeId"]), humanBytes($0["sizeBytes"])]
                    })
                    if let t = j["nextPageToken"]?.string { print("\nmore: --page-token \(t)") }
                }
            }
        }

        struct SnapDelete: ParsableCommand {
            static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a snapshot (unknown ids succeed).")
            @OptionGroup var conn: Connection
            @OptionGroup var sp: StorageOption
            @Argument(help: "The snapshot's id.") var id: String
            func run() throws {
                let j = try conn.call("DELETE", api("v1", "storage", try sp.name(conn), "snapshots", id))
                emit(j, conn.output) { print("snapshot \(id) deleted") }
            }
        }
    }
}

struct Storage: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the storage plugins berthd has loaded and what each supports.")
    @OptionGroup var conn: Connection
    func run() throws {
        let j = try conn.call("GET", "/v1/storage")
        emit(j, conn.output) {
            table(["NAME", "PLUGIN", "VERSION", "STATE", "CAPABILITIES"], (j["plugins"]?.array ?? []).map {
                [str($0["name"]), str($0["plugin"]), str($0["version"]), str($0["state"]), str($0["capabilities"])]
            })
        }
    }
}
