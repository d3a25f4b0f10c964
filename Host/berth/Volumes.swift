// berth volumes — CSI-style volumes of a storage plugin: create, list, show, delete, publish, unpublish, expand,
// capacity and snapshots.
import ArgumentParser
import BerthCore
import BerthWire
import Foundation

struct StorageOption: ParsableArguments {
    @Option(name: .long, help: "The storage plugin instance to act on.") var plugin: String = "storage-local"
}

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

func urlPart(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? s }

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
        subcommands: [Create.self, List.self, Show.self, Delete.self, Publish.self, Unpublish.self, Expand.self, Capacity.self, Snapshot.self])

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
        @Option(name: .long, help: "Clone this volume id.") var fromVolume: String?
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
            if let fromVolume { body = body.setting("source", ["volumeId": .string(fromVolume)]) }
            if !node.isEmpty { body = body.setting("topology", ["requisite": .array(node.map { ["node": .string($0)] })]) }
            let v = try conn.call("POST", "/v1/storage/\(urlPart(sp.plugin))/volumes", body: body)
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
            var q: [String] = []
            if let limit { q.append("limit=\(limit)") }
            if let pageToken { q.append("pageToken=\(urlPart(pageToken))") }
            let j = try conn.call("GET", "/v1/storage/\(urlPart(sp.plugin))/volumes" + (q.isEmpty ? "" : "?" + q.joined(separator: "&")))
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
        @Argument var id: String
        func run() throws {
            let v = try conn.call("GET", "/v1/storage/\(urlPart(sp.plugin))/volumes/\(urlPart(id))")
            emit(v, conn.output) { printVolume(v) }
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a volume and its data (refused while published; unknown ids succeed).")
        @OptionGroup var conn: Connection
        @OptionGroup var sp: StorageOption
        @Argument var id: String
        func run() throws {
            let j = try conn.call("DELETE", "/v1/storage/\(urlPart(sp.plugin))/volumes/\(urlPart(id))")
            emit(j, conn.output) { print("volume \(id) deleted") }
        }
    }

    struct Publish: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish a volume at a target path on a node: controller publish, stage (once per node), publish.",
            discussion: "--step runs one step only (controller, stage or node), for orchestrators that drive the steps themselves.")
        @OptionGroup var conn: Connection
        @OptionGroup var sp: StorageOption
        @Argument var id: String
        @Option(name: .long, help: "Node to publish to.") var node: String
        @Option(name: .long, help: "Target path (a directory for mount volumes, a file for block volumes).") var target: String?
        @Flag(name: .long, help: "Publish read-only.") var readonly = false
        @Option(name: .long, help: "all (default), controller, stage or node.") var step: String = "all"
        func run() throws {
            let base = "/v1/storage/\(urlPart(sp.plugin))/volumes/\(urlPart(id))"
            let absTarget = target.map { $0.hasPrefix("/") ? $0 : FileManager.default.currentDirectoryPath + "/" + $0 }
            let j: JSON
            switch step {
            case "all", "node":
                guard let absTarget else { throw ValidationError("--target is required") }
                j = try conn.call("POST", base + (step == "all" ? "/publish" : "/node-publish"),
                                  body: ["node": .string(node), "target": .string(absTarget), "readonly": .bool(readonly)])
            case "controller":
                j = try conn.call("POST", base + "/controller-publish", body: ["node": .string(node), "readonly": .bool(readonly)])
            case "stage":
                j = try conn.call("POST", base + "/stage", body: ["node": .string(node)])
            default:
                throw ValidationError("--step must be all, controller, stage or node")
            }
            emit(j, conn.output) { printVolume(j) }
        }
    }

    struct Unpublish: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Unpublish a target; when it was the node's last, unstage and controller-unpublish too.",
            discussion: "With --node and no --target, tears down the node's staging and controller publication if no target is left.")
        @OptionGroup var conn: Connection
        @OptionGroup var sp: StorageOption
        @Argument var id: String
        @Option(name: .long) var target: String?
        @Option(name: .long) var node: String?
        func run() throws {
            var body: JSON = .object([])
            if let target { body = body.setting("target", .string(target.hasPrefix("/") ? target : FileManager.default.currentDirectoryPath + "/" + target)) }
            if let node { body = body.setting("node", .string(node)) }
            guard target != nil || node != nil else { throw ValidationError("give --target, --node or both") }
            let j = try conn.call("POST", "/v1/storage/\(urlPart(sp.plugin))/volumes/\(urlPart(id))/unpublish", body: body)
            emit(j, conn.output) { printVolume(j) }
        }
    }

    struct Expand: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Grow a volume to at least the given size.")
        @OptionGroup var conn: Connection
        @OptionGroup var sp: StorageOption
        @Argument var id: String
        @Option(name: .long, help: "New size, e.g. 128Mi.") var size: String
        func run() throws {
            let j = try conn.call("POST", "/v1/storage/\(urlPart(sp.plugin))/volumes/\(urlPart(id))/expand",
                                  body: ["capacityBytes": JSON(Int64(try parseSize(size)))])
            emit(j, conn.output) { print("volume \(id) is now \(humanBytes(j["capacityBytes"])) (\(str(j["capacityBytes"])) bytes)") }
        }
    }

    struct Capacity: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Total, used and available capacity of the storage plugin.")
        @OptionGroup var conn: Connection
        @OptionGroup var sp: StorageOption
        @Option(name: .long) var node: String?
        func run() throws {
            let j = try conn.call("GET", "/v1/storage/\(urlPart(sp.plugin))/capacity" + (node.map { "?node=\(urlPart($0))" } ?? ""))
            emit(j, conn.output) {
                table(["TOTAL", "USED", "AVAILABLE", "MAX VOLUME"],
                      [[humanBytes(j["totalCapacity"]), humanBytes(j["usedBytes"]), humanBytes(j["availableCapacity"]), humanBytes(j["maximumVolumeSize"])]])
            }
        }
    }

    struct Snapshot: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Snapshots: create, list, delete. Restore with `volumes create --from-snapshot`.",
                                                        subcommands: [SnapCreate.self, SnapList.self, SnapDelete.self])

        struct SnapCreate: ParsableCommand {
            static let configuration = CommandConfiguration(commandName: "create", abstract: "Snapshot a volume (idempotent by name).")
            @OptionGroup var conn: Connection
            @OptionGroup var sp: StorageOption
            @Argument(help: "Snapshot name") var name: String
            @Option(name: .long, help: "Source volume id.") var volume: String
            func run() throws {
                let j = try conn.call("POST", "/v1/storage/\(urlPart(sp.plugin))/snapshots", body: ["name": .string(name), "sourceVolumeId": .string(volume)])
                emit(j, conn.output) { print("snapshot \(str(j["snapshotId"])) (\(str(j["name"]))) of \(str(j["sourceVolumeId"])), \(humanBytes(j["sizeBytes"]))") }
            }
        }

        struct SnapList: ParsableCommand {
            static let configuration = CommandConfiguration(commandName: "list", abstract: "List snapshots.")
            @OptionGroup var conn: Connection
            @OptionGroup var sp: StorageOption
            @Option(name: .long, help: "Only snapshots of this volume.") var volume: String?
            @Option(name: .long) var limit: Int?
            @Option(name: .long) var pageToken: String?
            func run() throws {
                var q: [String] = []
                if let volume { q.append("sourceVolumeId=\(urlPart(volume))") }
                if let limit { q.append("limit=\(limit)") }
                if let pageToken { q.append("pageToken=\(urlPart(pageToken))") }
                let j = try conn.call("GET", "/v1/storage/\(urlPart(sp.plugin))/snapshots" + (q.isEmpty ? "" : "?" + q.joined(separator: "&")))
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
            @Argument var id: String
            func run() throws {
                let j = try conn.call("DELETE", "/v1/storage/\(urlPart(sp.plugin))/snapshots/\(urlPart(id))")
                emit(j, conn.output) { print("snapshot \(id) deleted") }
            }
        }
    }
}
