// storage-local — CSI-style volumes on the local machine, the reference storage plugin (libberth-storage-local.so).
//
// Volumes live under a configured root with a configured capacity:
//   - mount volumes are directories   <root>/volumes/vol-NNNNNNNN/
//   - block volumes are image files   <root>/volumes/vol-NNNNNNNN.img, preallocated with posix_fallocate
//   - snapshots are real copies       <root>/snapshots/snap-NNNNNNNN[.img] (tree copy or file copy)
// Node stage bind-mounts the volume (mount volumes: its directory onto the staging directory; block volumes: its
// image onto <stagingPath>/vol-NNNNNNNN.img); node publish bind-mounts the staged volume at the target path
// (a directory for mount volumes, a file for block volumes), read-only when asked. mount(2) needs root.
// Unpublish and unstage unmount (umount2) and remove what publish created; both are idempotent.
//
// Configuration (JSON object; every key optional):
//   root                 absolute directory for volume data (default "<stateDir>/volumes", from BERTH_STATE_DIR,
//                        which berthd sets; "./berth-state/volumes" made absolute where no host sets it)
//   capacityBytes        total bytes this plugin may hand out to volumes and snapshots (default 10 GiB)
//   maxVolumeBytes       largest single volume (default: capacityBytes); larger requests get OUT_OF_RANGE
//   defaultVolumeBytes   size of a volume created without capacityBytes (default 64 MiB)
//   nodes                node ids the volumes can be published to (default: [this machine's hostname])
//   enforceSize          mount volumes are size-limited filesystems (default true; false: only accounted)
// For `berth plugin check` use e.g. {"root": "/tmp/x", "capacityBytes": 1073741824, "nodes": ["node-a", "node-b"]}
// (the conformance suite needs two nodes for its single-node-writer case).
//
// Capacity is accounted (the sum of volume sizes and snapshot sizes never exceeds capacityBytes:
// RESOURCE_EXHAUSTED) and block images are preallocated. Mount volumes are ext4 filesystems in sparse image files
// loop-mounted on their directories (SizeLimit.swift), so a write past a volume's size fails with ENOSPC; this needs
// root and e2fsprogs, and a create that cannot enforce the size is refused (FAILED_PRECONDITION) unless the
// configuration says "enforceSize": false (sizes then only accounted, as before).
//
// State: every record is in the plugin's key-value namespace (committed with the host's records, rolled back with
// them); the only files are the volume data. Operations are safe to re-run after a crash: data found at a new id's
// path (a create that was rolled back, or another instance sharing the root) is never reused or removed: the id is
// skipped; a publish that was rolled back leaves a mount that the re-run recognises (same inode) instead of stacking
// a second one. Give each instance its own root all the same.
//
// Keys:  seq/vol, seq/snap            counters (ids are never reused)
//        used                         bytes accounted
//        vol/<id>, name/<name>        volumes and the name index
//        snap/<id>, snapname/<name>   snapshots and their name index
//        attach/<id>/<node>           controller publications
//        stage/<id>/<node>            node stagings
//        pub/<id>/<hash(target)>      node publications; tgt/<hash(target)> -> id (one volume per target)
import BerthPluginKit

#if canImport(Glibc)
import Glibc
#endif

let accessModes = ["single-node-writer", "single-node-reader-only", "multi-node-reader-only", "multi-node-single-writer",
                   "multi-node-multi-writer", "single-node-single-writer", "single-node-multi-writer"]
let singleNodeModes: Set<String> = ["single-node-writer", "single-node-reader-only", "single-node-single-writer", "single-node-multi-writer"]
let readOnlyModes: Set<String> = ["single-node-reader-only", "multi-node-reader-only"]

let maxRequestBytes = 64 << 10
let maxNameBytes = 128
let maxMapBytes = 4096
let maxNodeIDBytes = 256
let blockSize: Int64 = 4096

func invalid(_ m: String) -> PluginError { PluginError(.invalidArgument, m) }

/// FNV-1a 64, hex: a short fixed-length key for long strings (target paths).
func hashKey(_ s: String) -> String {
    var h: UInt64 = 0xcbf29ce484222325
    for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100000001b3 }
    let hex = String(h, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}

func hexEncode(_ s: String) -> String {
    s.utf8.map { b -> String in let h = String(b, radix: 16); return h.count == 1 ? "0" + h : h }.joined()
}

func hexDecode(_ s: String) -> String? {
    let b = Array(s.utf8)
    guard b.count % 2 == 0 else { return nil }
    var out: [UInt8] = []
    var i = 0
    while i < b.count {
        guard let v = UInt8(String(decoding: b[i...(i + 1)], as: UTF8.self), radix: 16) else { return nil }
        out.append(v)
        i += 2
    }
    return String(validating: out, as: UTF8.self)
}

final class StorageLocal: StoragePlugin {
    static var capabilities: StorageCapabilities {
        [.controllerPublish, .stage, .expand, .snapshots, .listVolumes, .capacity, .validateCapabilities]
    }

    let host: HostServices
    var root: String
    var capacity: Int64
    var maxVolume: Int64
    var defaultVolume: Int64
    var nodes: [String]
    /// Mount volumes are size-limited filesystems (SizeLimit.swift); false: sizes are only accounted.
    var enforceSize: Bool

    init(host: HostServices, config: [UInt8]) throws {
        self.host = host
        let c = try JV.parse(config.isEmpty ? Array("{}".utf8) : config)
        var r = c["root"]?.string ?? StorageLocal.defaultRoot
        if !r.hasPrefix("/") {
            var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            guard getcwd(&buf, buf.count) != nil else { throw PluginError(.internal, "getcwd: \(FS.errnoText)") }
            var cwd = String(cString: buf)
            if cwd.hasSuffix("/") { cwd.removeLast() }
            r = cwd + "/" + (r.hasPrefix("./") ? String(r.dropFirst(2)) : r)
        }
        guard let norm = StorageLocal.normalize(r) else { throw invalid("root \"\(r)\" must be an absolute path without \"..\"") }
        root = norm
        capacity = c["capacityBytes"]?.int64 ?? (10 << 30)
        maxVolume = c["maxVolumeBytes"]?.int64 ?? capacity
        defaultVolume = min(c["defaultVolumeBytes"]?.int64 ?? (64 << 20), maxVolume)
        if let ns = c["nodes"]?.array {
            nodes = ns.compactMap { $0.string }
        } else {
            var buf = [CChar](repeating: 0, count: 256)
            gethostname(&buf, buf.count - 1)
            nodes = [String(cString: buf)]
        }
        guard capacity >= 0, maxVolume >= 0, !nodes.isEmpty else { throw invalid("capacityBytes and maxVolumeBytes must be >= 0 and nodes non-empty") }
        enforceSize = c["enforceSize"]?.bool ?? true
        remountVolumes()
        host.log(.info, "storage-local: root \(root), capacity \(capacity) bytes, nodes \(nodes.joined(separator: ","))")
    }

    /// Mounts the filesystem of every size-limited volume that is not mounted (after a reboot). A failure is logged;
    /// the volume's operations then report it.
    func remountVolumes() {
        guard enforceSize, let vols = try? scan("vol/") else { return }
        for (_, v) in vols where !isBlock(v) {
            guard let id = v["volumeId"]?.string else { continue }
            let dir = dataPath(id, block: false)
            guard FS.exists(SizeLimit.imagePath(dir)) else { continue }
            do { try SizeLimit.mount(dir) } catch { host.log(.warn, "storage-local: cannot mount the filesystem of \(id): \(error)") }
        }
    }

    func reconfigure(config: [UInt8]) throws { throw PluginError(.unimplemented, "storage-local is reconfigured by a new instance") }

    func call(method: String, request: [UInt8]) throws -> [UInt8] {
        switch method {
        case "info":
            return JV.object([("root", .string(root)), ("capacityBytes", .int(capacity)), ("maxVolumeBytes", .int(maxVolume)),
                              ("nodes", .array(nodes.map { .string($0) }))]).bytes
        default:
            throw PluginError(.unimplemented, "unknown method \"\(method)\" (storage-local knows info)")
        }
    }

    // MARK: - request helpers

    func parse(_ bytes: [UInt8]) throws -> JV {
        guard bytes.count <= maxRequestBytes else { throw invalid("request of \(bytes.count) bytes exceeds the limit of \(maxRequestBytes) bytes") }
        let v: JV
        do { v = try JV.parse(bytes.isEmpty ? Array("{}".utf8) : bytes) } catch let e as JV.ParseError {
            throw invalid("malformed JSON at byte \(e.offset): \(e.reason)")
        }
        guard case .object = v else { throw invalid("expected a JSON object, got \(v.typeName)") }
        return v
    }

    func string(_ r: JV, _ key: String, required: Bool = true, max: Int = maxNameBytes) throws -> String? {
        guard let v = r[key], !v.isNull else {
            if required { throw invalid("\(key) is required") }
            return nil
        }
        guard let s = v.string else { throw invalid("\(key) must be a string, got \(v.typeName)") }
        if s.isEmpty {
            if required { throw invalid("\(key) is required (got an empty string)") }
            return nil
        }
        guard s.utf8.count <= max else { throw invalid("\(key) is \(s.utf8.count) bytes long; at most \(max) are allowed") }
        return s
    }

    func int(_ r: JV, _ key: String) throws -> Int64? {
        guard let v = r[key], !v.isNull else { return nil }
        guard let i = v.int64 else { throw invalid("\(key) must be an integer, got \(v.typeName)") }
        guard i >= 0 else { throw invalid("\(key) must not be negative (got \(i))") }
        return i
    }

    func bool(_ r: JV, _ key: String) throws -> Bool {
        guard let v = r[key], !v.isNull else { return false }
        guard let b = v.bool else { throw invalid("\(key) must be a boolean, got \(v.typeName)") }
        return b
    }

    func validateName(_ name: String, _ field: String = "name") throws {
        guard name.utf8.count <= maxNameBytes else { throw invalid("\(field) is \(name.utf8.count) bytes long; at most \(maxNameBytes) are allowed") }
        guard !name.contains("/") else { throw invalid("\(field) \"\(name)\" contains \"/\"; names may not contain path separators") }
        guard !name.contains("..") else { throw invalid("\(field) \"\(name)\" contains \"..\"") }
        guard !name.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw invalid("\(field) contains control characters")
        }
    }

    func nodeID(_ r: JV, required: Bool = true) throws -> String? {
        guard let n = try string(r, "nodeId", required: required, max: maxNodeIDBytes) else { return nil }
        guard !n.unicodeScalars.contains(where: { $0.value < 0x20 }) else { throw invalid("nodeId contains control characters") }
        return n
    }

    /// The default data root: under the daemon's state directory, which berthd passes in BERTH_STATE_DIR (absolute),
    /// so that the volumes are found again whatever directory berthd is restarted from.
    static var defaultRoot: String {
        if let d = getenv("BERTH_STATE_DIR"), d.pointee == 0x2F { return String(cString: d) + "/volumes" }
        return "./berth-state/volumes"
    }

    /// Absolute, no "." or ".." components, no doubled or trailing slashes.
    static func normalize(_ p: String) -> String? {
        guard p.hasPrefix("/"), !p.contains("\u{0}") else { return nil }
        var parts: [Substring] = []
        for c in p.split(separator: "/", omittingEmptySubsequences: true) {
            if c == "." || c == ".." { return nil }
            parts.append(c)
        }
        return "/" + parts.joined(separator: "/")
    }

    /// A target or staging path from the request: absolute, normalised, with its symlinks resolved (the path that a
    /// mount lands on, and the one /proc/self/mountinfo shows), outside the plugin's root, itself resolved. Decided on
    /// the resolved path: a symlink cannot smuggle a mount into the data root, and unpublish finds the mount again.
    func path(_ r: JV, _ key: String) throws -> String {
        let raw = try string(r, key, max: 4096)!
        guard let p = StorageLocal.normalize(raw), p != "/" else { throw invalid("\(key) \"\(raw)\" must be an absolute path without \"..\"") }
        guard let real = FS.resolve(p) else {
            throw invalid("\(key) \"\(p)\" goes through a symlink that points nowhere (or a path that cannot be searched); give a path whose existing part resolves")
        }
        guard real != "/" else { throw invalid("\(key) \"\(p)\" resolves to /") }
        let roots = Set([root, FS.resolve(root) ?? root])
        for dataRoot in roots where real == dataRoot || real.hasPrefix(dataRoot + "/") || dataRoot.hasPrefix(real + "/") {
            throw invalid("\(key) \"\(p)\"\(real == p ? "" : " (resolved: \(real))") overlaps the plugin's data root \(dataRoot)")
        }
        return real
    }

    func stringMap(_ r: JV, _ key: String) throws -> JV {
        guard let v = r[key], !v.isNull else { return .object([]) }
        guard let o = v.object else { throw invalid("\(key) must be an object of strings") }
        for (k, val) in o {
            guard val.string != nil else { throw invalid("\(key).\(k) must be a string") }
            guard k.utf8.count <= maxNameBytes else { throw invalid("\(key) has a key longer than \(maxNameBytes) bytes") }
        }
        guard v.serialized.utf8.count <= maxMapBytes else { throw invalid("\(key) is larger than \(maxMapBytes) bytes") }
        return .object(o.sorted { $0.0 < $1.0 })
    }

    // MARK: - state helpers

    func get(_ key: String) throws -> JV? {
        guard let b = try host.get(key) else { return nil }
        return try JV.parse(b)
    }

    func put(_ key: String, _ v: JV) throws { try host.put(key, v.bytes) }

    func nextSeq(_ kind: String) throws -> Int64 {
        let n = (Int64(try host.getString("seq/\(kind)") ?? "0") ?? 0) + 1
        try host.put("seq/\(kind)", String(n))
        return n
    }

    func used() throws -> Int64 { Int64(try host.getString("used") ?? "0") ?? 0 }
    func addUsed(_ d: Int64) throws { try host.put("used", String(max(0, try used() + d))) }

    static func validID(_ id: String, _ prefix: String) -> Bool {
        id.hasPrefix(prefix) && id.utf8.count <= prefix.utf8.count + 19 && id.utf8.count > prefix.utf8.count
            && id.utf8.dropFirst(prefix.utf8.count).allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
    }

    func volume(_ id: String) throws -> JV? {
        guard StorageLocal.validID(id, "vol-") else { return nil }
        return try get("vol/\(id)")
    }

    func snapshot(_ id: String) throws -> JV? {
        guard StorageLocal.validID(id, "snap-") else { return nil }
        return try get("snap/\(id)")
    }

    func dataPath(_ id: String, block: Bool) -> String { "\(root)/volumes/\(id)\(block ? ".img" : "")" }
    func snapPath(_ id: String, block: Bool) -> String { "\(root)/snapshots/\(id)\(block ? ".img" : "")" }

    func ensureRoot() throws {
        try FS.makeDirs(root + "/volumes", mode: 0o700)
        try FS.makeDirs(root + "/snapshots", mode: 0o700)
    }

    static func pad(_ n: Int64) -> String { let s = String(n); return String(repeating: "0", count: max(0, 8 - s.count)) + s }

    func scan(_ prefix: String) throws -> [(key: String, value: JV)] {
        try host.scan(prefix: prefix).map { ($0.key, try JV.parse($0.value)) }
    }

    func isBlock(_ v: JV) -> Bool { v["volumeMode"]?.string == "block" }

    // MARK: - create / delete

    func createVolume(_ request: [UInt8]) throws -> [UInt8] {
        let r = try parse(request)
        let name = try string(r, "name")!
        try validateName(name)
        let accessMode = try string(r, "accessMode", required: false) ?? "single-node-writer"
        guard accessModes.contains(accessMode) else {
            throw invalid("accessMode \"\(accessMode)\" is not one of \(accessModes.joined(separator: ", "))")
        }
        let volumeMode = try string(r, "volumeMode", required: false) ?? "mount"
        guard volumeMode == "mount" || volumeMode == "block" else { throw invalid("volumeMode \"\(volumeMode)\" must be mount or block") }
        let requested = try int(r, "capacityBytes") ?? 0
        let limit = try int(r, "limitBytes") ?? 0
        let parameters = try stringMap(r, "parameters")
        if limit > 0 && requested > limit { throw PluginError(.outOfRange, "capacityBytes \(requested) exceeds limitBytes \(limit)") }

        // Source: a snapshot or a volume to copy from.
        var source: JV = .null
        var sourcePath: String?
        var sourceSize: Int64 = 0
        var sourceCapacity: Int64 = 0
        if let s = r["source"], !s.isNull {
            guard case .object = s else { throw invalid("source must be an object {snapshotId} or {volumeId}") }
            if let sid = try string(s, "snapshotId", required: false) {
                guard let snap = try snapshot(sid) else { throw PluginError(.notFound, "source snapshot \"\(sid)\" does not exist") }
                guard snap["volumeMode"]?.string == volumeMode else {
                    throw invalid("snapshot \(sid) is of a \(snap["volumeMode"]?.string ?? "?") volume; cannot restore it as \(volumeMode)")
                }
                source = .object([("snapshotId", .string(sid))])
                sourcePath = snapPath(sid, block: volumeMode == "block")
                sourceSize = snap["sizeBytes"]?.int64 ?? 0
                sourceCapacity = snap["sourceCapacityBytes"]?.int64 ?? sourceSize
            } else if let vid = try string(s, "volumeId", required: false) {
                guard let src = try volume(vid) else { throw PluginError(.notFound, "source volume \"\(vid)\" does not exist") }
                guard src["volumeMode"]?.string == volumeMode else { throw invalid("source volume \(vid) is a \(src["volumeMode"]?.string ?? "?") volume, not \(volumeMode)") }
                source = .object([("volumeId", .string(vid))])
                sourcePath = dataPath(vid, block: volumeMode == "block")
                sourceCapacity = src["capacityBytes"]?.int64 ?? 0
                sourceSize = volumeMode == "block" ? sourceCapacity : FS.treeSize(sourcePath!)
            } else {
                throw invalid("source must name a snapshotId or a volumeId")
            }
        }

        var required = requested
        if required == 0 {
            // No size asked: a copy gets its source's capacity, a new volume the default.
            required = sourceCapacity > 0 ? sourceCapacity : (limit > 0 ? min(defaultVolume, limit) : defaultVolume)
        }
        if sourcePath != nil && required < sourceSize {
            throw PluginError(.outOfRange, "capacityBytes \(required) is smaller than the source's \(sourceSize) bytes")
        }
        var size = (required + blockSize - 1) / blockSize * blockSize
        if limit > 0 && size > limit { size = required }
        if size == 0 { size = blockSize }
        guard size <= maxVolume else {
            throw PluginError(.outOfRange, "capacityBytes \(size) exceeds this plugin's maximum volume size of \(maxVolume) bytes (maxVolumeBytes)")
        }

        // Topology: the requisite nodes this plugin serves (all of its nodes when none is asked for).
        var accessible = nodes
        if let t = r["topology"], !t.isNull {
            guard case .object = t else { throw invalid("topology must be an object {requisite, preferred}") }
            if let req = t["requisite"]?.array, !req.isEmpty {
                let wanted = req.compactMap { $0["node"]?.string }
                accessible = nodes.filter { wanted.contains($0) }
                if accessible.isEmpty {
                    throw PluginError(.resourceExhausted, "none of the requisite nodes \(wanted) is served by this plugin (it serves \(nodes))")
                }
            }
        }

        // Idempotency by name.
        if let id = try host.getString("name/\(name)"), let existing = try volume(id) {
            let cap = existing["capacityBytes"]?.int64 ?? 0
            var why: String?
            if cap < required || (limit > 0 && cap > limit) { why = "capacity \(cap) bytes (asked for \(required)\(limit > 0 ? "..\(limit)" : ""))" }
            else if existing["accessMode"]?.string != accessMode { why = "accessMode \(existing["accessMode"]?.string ?? "?")" }
            else if existing["volumeMode"]?.string != volumeMode { why = "volumeMode \(existing["volumeMode"]?.string ?? "?")" }
            else if (existing["parameters"] ?? .object([])) != parameters { why = "other parameters" }
            else if (existing["source"] ?? .null) != source { why = "another source" }
            if let why { throw PluginError(.alreadyExists, "volume \"\(name)\" exists (\(id)) with \(why); delete it or use another name") }
            return existing.bytes
        }

        let usedNow = try used()
        guard usedNow + size <= capacity else {
            throw PluginError(.resourceExhausted, "no space: \(size) bytes asked, \(capacity - usedNow) of \(capacity) free (capacityBytes)")
        }
        let block = volumeMode == "block"
        try ensureRoot()
        // Data already at an id's path is never touched: it belongs to a create that was rolled back, or to another
        // instance sharing the root. Skip to the next id.
        var id = "", path = ""
        for _ in 0..<10_000 {
            id = "vol-" + StorageLocal.pad(try nextSeq("vol"))
            path = dataPath(id, block: block)
            if !FS.exists(dataPath(id, block: false)) && !FS.exists(dataPath(id, block: true))
                && !FS.exists(SizeLimit.imagePath(dataPath(id, block: false))) { break }
        }
        let limited = !block && enforceSize
        do {
            if let sourcePath {
                if limited { try SizeLimit.create(dir: path, size: size) }
                try FS.copyTree(sourcePath, path)
                if block { try FS.preallocate(path, size: size, create: false) }
            } else if block {
                try FS.preallocate(path, size: size, create: true)
            } else if limited {
                try SizeLimit.create(dir: path, size: size)
            } else if mkdir(path, 0o755) != 0 {
                throw PluginError(.internal, "mkdir \(path): \(FS.errnoText)")
            }
        } catch {
            if limited { try? SizeLimit.remove(dir: path) } else { try? FS.removeTree(path) }
            throw error
        }
        // A creation rolled back with the host's transaction (a conflict on a shared store runs it again) leaves no data.
        if host.hasV12 {
            try host.onComplete(afterRollback: { if limited { try? SizeLimit.remove(dir: path) } else { try? FS.removeTree(path) } })
        }
        let v = JV.object([
            ("volumeId", .string(id)), ("name", .string(name)), ("capacityBytes", .int(size)), ("accessMode", .string(accessMode)),
            ("volumeMode", .string(volumeMode)), ("parameters", parameters),
            ("accessibleTopology", .array(accessible.map { .object([("node", .string($0))]) })),
            ("source", source), ("volumeContext", .object([("path", .string(path))])), ("createdAt", .double(Double(time(nil)))),
        ])
        try put("vol/\(id)", v)
        try host.put("name/\(name)", id)
        try addUsed(size)
        return v.bytes
    }

    func deleteVolume(_ request: [UInt8]) throws -> [UInt8] {
        let r = try parse(request)
        let id = try string(r, "volumeId")!
        guard let v = try volume(id) else { return [] }  // unknown: already deleted
        if let p = try host.next(prefix: "attach/\(id)/") {
            throw PluginError(.failedPrecondition, "volume \(id) is published to node \(p.key.dropFirst("attach/\(id)/".count)); unpublish it first")
        }
        if try host.next(prefix: "pub/\(id)/") != nil || host.next(prefix: "stage/\(id)/") != nil {
            throw PluginError(.failedPrecondition, "volume \(id) is staged or published on a node; unpublish it first")
        }
        // The data goes once the deletion is committed (ABI 1.2): a rolled-back delete keeps the volume and its data.
        let data = dataPath(id, block: isBlock(v))
        let removeData: () throws -> Void = {
            if !self.isBlock(v) && FS.exists(SizeLimit.imagePath(data)) { try SizeLimit.remove(dir: data) } else { try FS.removeTree(data) }
        }
        if host.hasV12 { try host.onComplete(afterCommit: { try? removeData() }) } else { try removeData() }
        try host.delete("vol/\(id)")
        if let name = v["name"]?.string { try host.delete("name/\(name)") }
        try addUsed(-(v["capacityBytes"]?.int64 ?? 0))
        return []
    }

    // MARK: - controller publish

    func controllerPublish(_ request: [UInt8]) throws -> [UInt8] {
        let r = try parse(request)
        let id = try string(r, "volumeId")!
        let node = try nodeID(r)!
        let readonly = try bool(r, "readonly")
        guard let v = try volume(id) else { throw PluginError(.notFound, "volume \"\(id)\" does not exist") }
        guard nodes.contains(node) else { throw PluginError(.notFound, "node \"\(node)\" is not served by this plugin (nodes: \(nodes.joined(separator: ", ")))") }
        let topo = (v["accessibleTopology"]?.array ?? []).compactMap { $0["node"]?.string }
        guard topo.isEmpty || topo.contains(node) else {
            throw PluginError(.failedPrecondition, "volume \(id) is not accessible from node \(node) (only \(topo.joined(separator: ", ")))")
        }
        let mode = v["accessMode"]?.string ?? "single-node-writer"
        if readOnlyModes.contains(mode) && !readonly && r["readonly"] != nil {
            throw invalid("volume \(id) is \(mode): publish it with readonly true")
        }
        let ro = readonly || readOnlyModes.contains(mode)
        let context = JV.object([("node", .string(node)), ("readonly", .string(ro ? "true" : "false")), ("volumeMode", v["volumeMode"] ?? "mount")])
        if let existing = try get("attach/\(id)/\(node)") {
            if existing["readonly"]?.bool != ro {
                throw PluginError(.alreadyExists, "volume \(id) is already published to node \(node) with readonly \(existing["readonly"]?.bool ?? false)")
            }
            return JV.object([("publishContext", context)]).bytes
        }
        let others = try scan("attach/\(id)/")
        if singleNodeModes.contains(mode), let other = others.first {
            throw PluginError(.failedPrecondition, "volume \(id) is \(mode) and already published to node \(other.key.dropFirst("attach/\(id)/".count))")
        }
        if mode == "multi-node-single-writer", !ro, let w = others.first(where: { $0.value["readonly"]?.bool == false }) {
            throw PluginError(.failedPrecondition, "volume \(id) is multi-node-single-writer and already writable on node \(w.key.dropFirst("attach/\(id)/".count))")
        }
        try put("attach/\(id)/\(node)", .object([("readonly", .bool(ro))]))
        return JV.object([("publishContext", context)]).bytes
    }

    func controllerUnpublish(_ request: [UInt8]) throws -> [UInt8] {
        let r = try parse(request)
        let id = try string(r, "volumeId")!
        let node = try nodeID(r, required: false)
        var targets: [String] = []
        if let node { targets = ["attach/\(id)/\(node)"] } else { targets = try scan("attach/\(id)/").map { $0.key } }
        for key in targets {
            let n = String(key.dropFirst("attach/\(id)/".count))
            if try host.get("stage/\(id)/\(n)") != nil {
                throw PluginError(.failedPrecondition, "volume \(id) is still staged on node \(n); unstage it first")
            }
            try host.delete(key)
        }
        return []
    }

    // MARK: - node stage

    func stagedItem(_ id: String, _ v: JV, _ stagingPath: String) -> String {
        isBlock(v) ? "\(stagingPath)/\(id).img" : stagingPath
    }

    func nodeStage(_ request: [UInt8]) throws -> [UInt8] {
        let r = try parse(request)
        let id = try string(r, "volumeId")!
        let node = try nodeID(r)!
        let staging = try path(r, "stagingPath")
        guard let v = try volume(id) else { throw PluginError(.notFound, "volume \"\(id)\" does not exist") }
        guard try host.get("attach/\(id)/\(node)") != nil else {
            throw PluginError(.failedPrecondition, "volume \(id) is not controller-published to node \(node); publish it to the node first")
        }
        if let existing = try get("stage/\(id)/\(node)"), existing["stagingPath"]?.string != staging {
            throw PluginError(.alreadyExists, "volume \(id) is already staged on node \(node) at \(existing["stagingPath"]?.string ?? "?")")
        }
        let data = dataPath(id, block: isBlock(v))
        guard FS.exists(data) else { throw PluginError(.internal, "the data of volume \(id) is missing at \(data)") }
        try FS.makeDirs(staging)
        let item = stagedItem(id, v, staging)
        if isBlock(v), !FS.exists(item) {
            let fd = open(item, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw PluginError(.internal, "create \(item): \(FS.errnoText)") }
            close(fd)
        }
        if !(FS.isMountPoint(item) && FS.sameFile(item, data)) {
            try FS.bindMount(data, item, readonly: false)
            // Rolled back with the host's transaction: the mount goes too, or running it again finds it in the way.
            if host.hasV12 { try host.onComplete(afterRollback: { try? FS.unmount(item) }) }
        }
        try put("stage/\(id)/\(node)", .object([("stagingPath", .string(staging))]))
        return []
    }

    func nodeUnstage(_ request: [UInt8]) throws -> [UInt8] {
        let r = try parse(request)
        let id = try string(r, "volumeId")!
        let staging = try path(r, "stagingPath")
        var node = try nodeID(r, required: false)
        if node == nil {
            node = try scan("stage/\(id)/").first { $0.value["stagingPath"]?.string == staging }.map { String($0.key.dropFirst("stage/\(id)/".count)) }
        }
        if let node, let p = try scan("pub/\(id)/").first(where: { $0.value["node"]?.string == node }) {
            throw PluginError(.failedPrecondition, "volume \(id) is still published at \(p.value["targetPath"]?.string ?? "?") on node \(node); unpublish it first")
        }
        let v = try volume(id)
        let record = try node.flatMap { try get("stage/\(id)/\($0)") }
        if let v {
            let item = stagedItem(id, v, staging)
            // Unmount only our own mount: a recorded staging, or one left by a rolled-back stage (same inode).
            if record != nil || FS.sameFile(item, dataPath(id, block: isBlock(v))) {
                try FS.unmount(item)
                if isBlock(v), !FS.isMountPoint(item), let st = FS.lstatOf(item), FS.isReg(st), st.st_size == 0 { unlink(item) }
                if !FS.isMountPoint(staging) { rmdir(staging) }
            }
        }
        if let node { try host.delete("stage/\(id)/\(node)") }
        return []
    }

    // MARK: - node publish

    func nodePublish(_ request: [UInt8]) throws -> [UInt8] {
        let r = try parse(request)
        let id = try string(r, "volumeId")!
        let node = try nodeID(r)!
        let target = try path(r, "targetPath")
        let staging = try path(r, "stagingPath")
        let readonlyAsked = try bool(r, "readonly")
        guard let v = try volume(id) else { throw PluginError(.notFound, "volume \"\(id)\" does not exist") }
        guard let stage = try get("stage/\(id)/\(node)") else {
            throw PluginError(.failedPrecondition, "volume \(id) is not staged on node \(node); stage it first")
        }
        guard stage["stagingPath"]?.string == staging else {
            throw invalid("stagingPath \(staging) is not where volume \(id) is staged on node \(node) (\(stage["stagingPath"]?.string ?? "?"))")
        }
        let readonly = readonlyAsked || readOnlyModes.contains(v["accessMode"]?.string ?? "")
        let key = hashKey(target)
        if let owner = try host.getString("tgt/\(key)"), owner != id {
            throw PluginError(.failedPrecondition, "target \(target) is in use by volume \(owner)")
        }
        if let existing = try get("pub/\(id)/\(key)") {
            if existing["readonly"]?.bool != readonly || existing["node"]?.string != node {
                throw PluginError(.alreadyExists, "volume \(id) is already published at \(target) with readonly \(existing["readonly"]?.bool ?? false) on node \(existing["node"]?.string ?? "?")")
            }
        }
        let block = isBlock(v)
        let data = dataPath(id, block: block)
        let source = stagedItem(id, v, staging)
        if let st = FS.lstatOf(target) {
            if block && FS.isDir(st) { throw invalid("targetPath \(target) is a directory; a block volume is published at a file path") }
            if !block && !FS.isDir(st) { throw invalid("targetPath \(target) exists and is not a directory") }
        } else if block {
            try FS.makeDirs(FS.dirname(target))
            let fd = open(target, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
            guard fd >= 0 else { throw PluginError(.internal, "create \(target): \(FS.errnoText)") }
            close(fd)
        } else {
            try FS.makeDirs(target)
        }
        // What was decided on must still be what the mount lands on: no symlink appeared on the way meanwhile.
        guard FS.resolve(target) == target else {
            throw PluginError(.failedPrecondition, "targetPath \(target) changed while it was prepared (it now goes through a symlink); nothing was mounted")
        }
        if FS.isMountPoint(target) {
            guard FS.sameFile(target, data) else {
                throw PluginError(.failedPrecondition, "\(target) is already a mount point of something else")
            }
        } else {
            try FS.bindMount(source, target, readonly: readonly)
            if host.hasV12 { try host.onComplete(afterRollback: { try? FS.unmount(target) }) }
        }
        try put("pub/\(id)/\(key)", .object([("node", .string(node)), ("targetPath", .string(target)), ("readonly", .bool(readonly))]))
        try host.put("tgt/\(key)", id)
        return []
    }

    func nodeUnpublish(_ request: [UInt8]) throws -> [UInt8] {
        let r = try parse(request)
        let id = try string(r, "volumeId")!
        let target = try path(r, "targetPath")
        let key = hashKey(target)
        let record = try get("pub/\(id)/\(key)")
        guard let v = try volume(id) else {
            try host.delete("pub/\(id)/\(key)")
            return []
        }
        let block = isBlock(v)
        // Unmount only our own mount: a recorded publication, or one left by a rolled-back publish (same inode).
        if record != nil || (FS.isMountPoint(target) && FS.sameFile(target, dataPath(id, block: block))) {
            try FS.unmount(target)
            if let st = FS.lstatOf(target), !FS.isMountPoint(target) {
                if FS.isDir(st) { rmdir(target) } else if FS.isReg(st), st.st_size == 0 { unlink(target) }
            }
        }
        try host.delete("pub/\(id)/\(key)")
        if try host.getString("tgt/\(key)") == id { try host.delete("tgt/\(key)") }
        return []
    }

    // MARK: - expand

    func expandVolume(_ request: [UInt8]) throws -> [UInt8] {
        let r = try parse(request)
        let id = try string(r, "volumeId")!
        guard let asked = try int(r, "capacityBytes"), asked > 0 else { throw invalid("capacityBytes is required (a positive integer)") }
        guard var v = try volume(id) else { throw PluginError(.notFound, "volume \"\(id)\" does not exist") }
        let current = v["capacityBytes"]?.int64 ?? 0
        let size = (asked + blockSize - 1) / blockSize * blockSize
        if size <= current {
            return JV.object([("capacityBytes", .int(current)), ("nodeExpansionRequired", .bool(false))]).bytes
        }
        guard size <= maxVolume else { throw PluginError(.outOfRange, "capacityBytes \(size) exceeds the maximum volume size of \(maxVolume) bytes") }
        let usedNow = try used()
        guard usedNow - current + size <= capacity else {
            throw PluginError(.resourceExhausted, "no space to grow \(id) by \(size - current) bytes: \(capacity - usedNow) free")
        }
        if isBlock(v) { try FS.preallocate(dataPath(id, block: true), size: size, create: false) }
        if !isBlock(v) && FS.exists(SizeLimit.imagePath(dataPath(id, block: false))) {
            let inUse = try host.next(prefix: "pub/\(id)/") != nil || host.next(prefix: "stage/\(id)/") != nil
            try SizeLimit.grow(dir: dataPath(id, block: false), size: size, inUse: inUse)
        }
        v["capacityBytes"] = .int(size)
        try put("vol/\(id)", v)
        try addUsed(size - current)
        return JV.object([("capacityBytes", .int(size)), ("nodeExpansionRequired", .bool(false))]).bytes
    }

    // MARK: - snapshots

    func createSnapshot(_ request: [UInt8]) throws -> [UInt8] {
        let r = try parse(request)
        let name = try string(r, "name")!
        try validateName(name)
        let sourceID = try string(r, "sourceVolumeId")!
        _ = try stringMap(r, "parameters")
        if let id = try host.getString("snapname/\(name)"), let existing = try snapshot(id) {
            guard existing["sourceVolumeId"]?.string == sourceID else {
                throw PluginError(.alreadyExists, "snapshot \"\(name)\" exists (\(id)) of another volume, \(existing["sourceVolumeId"]?.string ?? "?")")
            }
            return existing.bytes
        }
        guard let v = try volume(sourceID) else { throw PluginError(.notFound, "source volume \"\(sourceID)\" does not exist") }
        let block = isBlock(v)
        let src = dataPath(sourceID, block: block)
        let size = block ? (v["capacityBytes"]?.int64 ?? 0) : FS.treeSize(src)
        let usedNow = try used()
        guard usedNow + size <= capacity else {
            throw PluginError(.resourceExhausted, "no space for a snapshot of \(size) bytes: \(capacity - usedNow) free")
        }
        try ensureRoot()
        var id = "", dst = ""
        for _ in 0..<10_000 {
            id = "snap-" + StorageLocal.pad(try nextSeq("snap"))
            dst = snapPath(id, block: block)
            if !FS.exists(snapPath(id, block: false)) && !FS.exists(snapPath(id, block: true)) { break }
        }
        do { try FS.copyTree(src, dst) } catch {
            try? FS.removeTree(dst)
            throw error
        }
        let s = JV.object([
            ("snapshotId", .string(id)), ("name", .string(name)), ("sourceVolumeId", .string(sourceID)), ("sizeBytes", .int(size)),
            ("sourceCapacityBytes", v["capacityBytes"] ?? .int(0)), ("volumeMode", v["volumeMode"] ?? "mount"),
            ("createdAt", .double(Double(time(nil)))), ("readyToUse", .bool(true)),
        ])
        try put("snap/\(id)", s)
        try host.put("snapname/\(name)", id)
        try addUsed(size)
        return s.bytes
    }

    func deleteSnapshot(_ request: [UInt8]) throws -> [UInt8] {
        let r = try parse(request)
        let id = try string(r, "snapshotId")!
        guard let s = try snapshot(id) else { return [] }
        try FS.removeTree(snapPath(id, block: s["volumeMode"]?.string == "block"))
        try host.delete("snap/\(id)")
        if let name = s["name"]?.string { try host.delete("snapname/\(name)") }
        try addUsed(-(s["sizeBytes"]?.int64 ?? 0))
        return []
    }

    /// Paging over `prefix`: the token is the hex of the last key returned, "v1." first. Anything else: ABORTED.
    func page(_ r: JV, prefix: String, idPrefix: String, filter: (JV) -> Bool) throws -> JV {
        let maxEntries = try int(r, "maxEntries") ?? 0
        var after = ""
        if let token = try string(r, "startingToken", required: false, max: 1024) {
            guard token.hasPrefix("v1."), let id = hexDecode(String(token.dropFirst(3))), StorageLocal.validID(id, idPrefix) else {
                throw PluginError(.aborted, "startingToken \"\(token)\" is not a token this plugin issued; list again from the start")
            }
            after = prefix + id
        }
        var entries: [JV] = []
        var last = ""
        var more = false
        while let e = try host.next(prefix: prefix, after: after) {
            after = e.key
            let v = try JV.parse(e.value)
            guard filter(v) else { continue }
            if maxEntries > 0 && entries.count == Int(maxEntries) { more = true; break }
            entries.append(v)
            last = String(e.key.dropFirst(prefix.count))
        }
        var out: [(String, JV)] = [("entries", .array(entries))]
        if more { out.append(("nextToken", .string("v1." + hexEncode(last)))) }
        return .object(out)
    }

    func listSnapshots(_ request: [UInt8]) throws -> [UInt8] {
        let r = try parse(request)
        let source = try string(r, "sourceVolumeId", required: false)
        if let sid = try string(r, "snapshotId", required: false) {
            let s = try snapshot(sid)
            return JV.object([("entries", .array(s.map { [$0] } ?? []))]).bytes
        }
        return try page(r, prefix: "snap/", idPrefix: "snap-") { source == nil || $0["sourceVolumeId"]?.string == source }.bytes
    }

    func listVolumes(_ request: [UInt8]) throws -> [UInt8] {
        let r = try parse(request)
        var out = try page(r, prefix: "vol/", idPrefix: "vol-") { _ in true }
        let entries = try (out["entries"]?.array ?? []).map { v -> JV in
            let id = v["volumeId"]?.string ?? ""
            let published = try scan("attach/\(id)/").map { JV.string(String($0.key.dropFirst("attach/\(id)/".count))) }
            var e = v
            e["publishedNodeIds"] = .array(published)
            return e
        }
        out["entries"] = .array(entries)
        return out.bytes
    }

    // MARK: - capacity and capabilities

    func getCapacity(_ request: [UInt8]) throws -> [UInt8] {
        let r = try parse(request)
        let usedNow = try used()
        var available = max(0, capacity - usedNow)
        if let t = r["topology"], let n = t["node"]?.string, !nodes.contains(n) { available = 0 }
        var fsFree: Int64 = -1
        var sv = statvfs()
        if statvfs(FS.exists(root) ? root : FS.dirname(root), &sv) == 0 { fsFree = Int64(sv.f_bavail) * Int64(sv.f_frsize) }
        return JV.object([
            ("totalCapacity", .int(capacity)), ("availableCapacity", .int(available)), ("usedBytes", .int(usedNow)),
            ("maximumVolumeSize", .int(min(maxVolume, available))), ("minimumVolumeSize", .int(blockSize)),
            ("filesystemFreeBytes", .int(fsFree)),
        ]).bytes
    }

    func validateCapabilities(_ request: [UInt8]) throws -> [UInt8] {
        let r = try parse(request)
        let id = try string(r, "volumeId")!
        var caps = r["volumeCapabilities"]?.array ?? []
        if caps.isEmpty, r["accessMode"] != nil || r["volumeMode"] != nil {
            caps = [.object([("accessMode", r["accessMode"] ?? .null), ("volumeMode", r["volumeMode"] ?? .null)])]
        }
        guard !caps.isEmpty else { throw invalid("volumeCapabilities is required (or accessMode and volumeMode)") }
        guard let v = try volume(id) else { throw PluginError(.notFound, "volume \"\(id)\" does not exist") }
        let params = try stringMap(r, "parameters")
        for c in caps {
            let am = c["accessMode"]?.string ?? v["accessMode"]?.string ?? ""
            let vm = c["volumeMode"]?.string ?? v["volumeMode"]?.string ?? ""
            guard accessModes.contains(am) else { throw invalid("accessMode \"\(am)\" is not a known access mode") }
            guard vm == "mount" || vm == "block" else { throw invalid("volumeMode \"\(vm)\" must be mount or block") }
            if vm != v["volumeMode"]?.string || am != v["accessMode"]?.string {
                return JV.object([("confirmed", .bool(false)),
                                  ("message", .string("volume \(id) is \(v["accessMode"]?.string ?? "?") \(v["volumeMode"]?.string ?? "?"), not \(am) \(vm)"))]).bytes
            }
        }
        if case .object(let kv) = params, !kv.isEmpty, params != (v["parameters"] ?? .object([])) {
            return JV.object([("confirmed", .bool(false)), ("message", .string("parameters differ from the volume's"))]).bytes
        }
        return JV.object([("confirmed", .bool(true)), ("volumeCapabilities", .array(caps))]).bytes
    }
}

@_cdecl("berth_plugin_entry_v1")
public func berthPluginEntry(_ hostMajor: UInt16, _ hostMinor: UInt16) -> UnsafeRawPointer? {
    BerthPluginExport.entry(StorageLocal.self, info: PluginInfo(
        name: "storage-local", version: "1.0.0",
        description: "CSI-style local volumes: directories and preallocated block images, bind mounts, copy snapshots",
        configSchema: #"""
        {"type":"object","additionalProperties":false,"properties":{
          "root":{"type":"string","minLength":1,"maxLength":1024},
          "capacityBytes":{"type":"integer","minimum":0},
          "maxVolumeBytes":{"type":"integer","minimum":0},
          "defaultVolumeBytes":{"type":"integer","minimum":4096},
          "enforceSize":{"type":"boolean"},
          "nodes":{"type":"array","minItems":1,"items":{"type":"string","minLength":1,"maxLength":256}}}}
        """#),
        hostMajor: hostMajor)
}
