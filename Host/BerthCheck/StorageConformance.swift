// Storage conformance for `berth plugin check`, modelled on csi-sanity (kubernetes-csi/csi-test pkg/sanity): CSI's
// idempotency rules and error codes, the publish order, paging, capacity, snapshots and expansion, each case
// printed with pass or fail. The cases call the plugin directly (no host records), each call in its own
// transaction on the executor, exactly as berthd makes them.
//
// Nodes: "nodes" of the configuration (`--config`) when it lists them, else the plugin's generic call "info"
// ({"nodes": [...]}); the first two are used (the single-node-writer case needs two). With neither, the suite
// stops at a failing "nodes" case that says so. Paths follow CSI: the check (the CO) creates each staging
// directory and the parent of each target; the plugin creates the target at publish and removes it at unpublish.
// Node publish makes real mounts with storage-local: run the check as root.
//
// Rolled-back operations: the host may roll an operation back after the plugin returned OK (its own part failed).
// The suite forces that for delete_volume and checks that the volume, which still exists, kept its data: deleting
// data belongs in an ABI 1.2 after_commit callback.
import BerthCore
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthPluginABI
import BerthWire
import Foundation

enum StorageConformance {
    static let statusOK: Int32 = 0

    /// Thrown inside an operation's transaction after the plugin returned OK, so that the host rolls it back.
    struct ForcedRollback: Error {}

    static func run(_ inst: PluginInstance, executor ex: Executor, scratch: String, config: JSON = .object([])) -> [CheckCase] {
        var out: [CheckCase] = []
        let ops = inst.storageOps!
        func add(_ n: String, _ ok: Bool, _ d: String) { out.append(CheckCase(name: "storage: \(n)", passed: ok, detail: d)) }
        func skip(_ n: String, _ d: String) { out.append(.skip("storage: \(n)", d)) }

        func raw(_ op: StorageOps.Op, _ bytes: [UInt8]) -> Result<JSON, BerthError> {
            do {
                let b = try ex.runSync { try ops.callRaw(op, bytes) }
                if b.isEmpty { return .success(.object([])) }
                guard let v = try? JSON.parse(b), case .object = v else {
                    return .failure(BerthError(plugin: inst.name, operation: op.rawValue, status: .internal, message: "the plugin returned invalid JSON (\(b.count) bytes)"))
                }
                return .success(v)
            } catch let e as BerthError { return .failure(e) } catch {
                return .failure(BerthError(plugin: inst.name, operation: op.rawValue, status: .internal, message: "\(error)"))
            }
        }
        func call(_ op: StorageOps.Op, _ req: JSON) -> Result<JSON, BerthError> { raw(op, req.bytes) }
        func status(_ r: Result<JSON, BerthError>) -> Int32 { if case .failure(let e) = r { return e.status.rawValue }; return 0 }
        func name(_ st: Int32) -> String { BerthStatus(rawValue: st).name }
        func describe(_ r: Result<JSON, BerthError>) -> String {
            switch r {
            case .success(let j): return "OK \(j.serialized.prefix(160))"
            case .failure(let e): return "\(e.statusName): \(e.message)"
            }
        }
        /// Passes when the call returned `want` (one of).
        func expect(_ label: String, _ r: Result<JSON, BerthError>, _ want: Int32...) {
            let st = status(r)
            add(label, want.contains(st), "want \(want.map(name).joined(separator: " or ")), got \(describe(r))")
        }
        func ok(_ r: Result<JSON, BerthError>) -> JSON? { if case .success(let j) = r { return j }; return nil }

        // Which nodes to use.
        var nodes: [String] = config["nodes"]?.array?.compactMap { $0.string } ?? []
        var infoProblem = "the plugin has no generic call"
        if nodes.isEmpty {
            do {
                let info = try ex.runSync { try inst.call(method: "info", Array("{}".utf8)) }
                nodes = (try? JSON.parse(info))?["nodes"]?.array?.compactMap { $0.string } ?? []
                if nodes.isEmpty { infoProblem = "call \"info\" returned no \"nodes\" array of strings" }
            } catch let e as BerthError { infoProblem = "call \"info\": \(e.statusName): \(e.message)" } catch { infoProblem = "\(error)" }
        }
        guard !nodes.isEmpty else {
            add("nodes", false, "cannot learn which nodes the plugin serves (\(infoProblem)): answer the generic call \"info\" with {\"nodes\": [...]} (see sdk-docs/kinds/storage.md), or list them as \"nodes\" in --config")
            return out
        }
        let node1 = nodes[0]
        let node2 = nodes.count > 1 ? nodes[1] : nil
        let unknownNode = "berth-conformance-no-such-node"
        let tag = String(UInt64.random(in: 0..<UInt64.max) % 1_000_000)
        func vname(_ s: String) -> String { "conformance-\(tag)-\(s)" }
        var created: [String] = []       // volume ids to clean up
        var snapshots: [String] = []     // snapshot ids to clean up
        let stagingRoot = scratch + "/staging", targetRoot = scratch + "/targets"
        try? FileManager.default.createDirectory(atPath: stagingRoot, withIntermediateDirectories: true)
        try? FileManager.default.createDirectory(atPath: targetRoot, withIntermediateDirectories: true)
        var pathSeq = 0
        func freshPath(_ root: String) -> String { pathSeq += 1; return "\(root)/p\(pathSeq)" }

        let hasController = ops.has(.controllerPublish) && ops.has(.controllerUnpublish)
        let hasStage = ops.has(.nodeStage) && ops.has(.nodeUnstage)
        var caps: [String] = []
        if hasController { caps.append("controller-publish") }
        if hasStage { caps.append("stage") }
        if ops.has(.expandVolume) { caps.append("expand") }
        if ops.has(.createSnapshot) { caps.append("snapshots") }
        if ops.has(.listVolumes) { caps.append("list") }
        if ops.has(.getCapacity) { caps.append("capacity") }
        if ops.has(.validateCapabilities) { caps.append("validate") }
        add("operations", true, "required group present; optional: \(caps.isEmpty ? "none" : caps.joined(separator: ", ")); nodes \(nodes.joined(separator: ", "))")

        func create(_ n: String, size: Int = 1 << 20, mode: String = "mount", access: String = "single-node-writer", extra: [(String, JSON)] = []) -> Result<JSON, BerthError> {
            var req: JSON = ["name": .string(n), "capacityBytes": JSON(Int64(size)), "accessMode": .string(access), "volumeMode": .string(mode)]
            for (k, v) in extra { req = req.setting(k, v) }
            let r = call(.createVolume, req)
            if let id = ok(r)?["volumeId"]?.string, !created.contains(id) { created.append(id) }
            return r
        }
        func delete(_ id: String) -> Result<JSON, BerthError> { call(.deleteVolume, ["volumeId": .string(id)]) }

        // MARK: create: input validation
        expect("create without name → INVALID_ARGUMENT", call(.createVolume, ["capacityBytes": 1048576, "volumeMode": "mount"]), 3)
        expect("create with malformed JSON → INVALID_ARGUMENT", raw(.createVolume, Array("{\"name\": \"x\", ".utf8)), 3)
        expect("create with huge input refused", create(String(repeating: "h", count: 1 << 20)), 3, 11)
        do {
            let a = create("../escape-\(tag)"), b = create("a/b-\(tag)")
            add("create with path tricks in the name → INVALID_ARGUMENT", status(a) == 3 && status(b) == 3, "\"../escape\": \(describe(a)); \"a/b\": \(describe(b))")
        }
        expect("create with an unknown volumeMode → INVALID_ARGUMENT", create(vname("badmode"), mode: "tape"), 3)

        // MARK: create: idempotency and limits
        let r1 = create(vname("vol1"))
        let v1 = ok(r1)?["volumeId"]?.string
        add("create volume", v1 != nil && (ok(r1)?["capacityBytes"]?.int ?? 0) >= 1 << 20,
            v1 == nil ? describe(r1) : "\(v1!) of \(ok(r1)?["capacityBytes"]?.int ?? 0) bytes")
        let r1b = create(vname("vol1"))
        add("same name, compatible size → the same volume", v1 != nil && ok(r1b)?["volumeId"]?.string == v1,
            "first \(v1 ?? "-"), second \(describe(r1b))")
        expect("same name, other size → ALREADY_EXISTS", create(vname("vol1"), size: 8 << 20), 6)
        let longName = "L\(tag)-" + String(repeating: "x", count: 128 - "L\(tag)-".utf8.count)
        let rl = create(longName)
        add("maximum-length name (128 bytes)", ok(rl)?["volumeId"] != nil, "\(longName.utf8.count) bytes: \(describe(rl))")
        expect("129-byte name → INVALID_ARGUMENT", create(longName + "y"), 3)
        do {
            let a = create(vname("huge"), size: 1 << 62)
            let b = create(vname("limit"), size: 8 << 20, extra: [("limitBytes", JSON(Int64(4 << 20)))])
            add("sizes beyond limits → OUT_OF_RANGE", status(a) == 11 && status(b) == 11,
                "2^62 bytes: \(describe(a)); capacityBytes above limitBytes: \(describe(b))")
        }
        expect("create from an unknown snapshot → NOT_FOUND", create(vname("fromsnap"), extra: [("source", ["snapshotId": "snap-does-not-exist"])]), 5)
        expect("delete of an unknown id → OK", delete("vol-does-not-exist-\(tag)"), 0)
        expect("delete without volumeId → INVALID_ARGUMENT", call(.deleteVolume, .object([])), 3)

        // MARK: validate capabilities
        if ops.has(.validateCapabilities), let v1 {
            let a = call(.validateCapabilities, ["volumeId": .string(v1), "volumeCapabilities": [["accessMode": "single-node-writer", "volumeMode": "mount"]]])
            let b = call(.validateCapabilities, ["volumeId": .string("vol-unknown-\(tag)"), "volumeCapabilities": [["accessMode": "single-node-writer", "volumeMode": "mount"]]])
            let c = call(.validateCapabilities, ["volumeId": .string(v1), "volumeCapabilities": [["accessMode": "single-node-writer", "volumeMode": "block"]]])
            add("validate capabilities", ok(a)?["confirmed"]?.bool == true && status(b) == 5 && ok(c)?["confirmed"]?.bool == false,
                "own capabilities: \(describe(a)); unknown volume: \(describe(b)); block for a mount volume: \(describe(c))")
        } else {
            skip("validate capabilities", "not implemented (optional)")
        }

        // MARK: list
        func listAll(_ maxEntries: Int) -> (ids: [String], pages: Int, error: String?) {
            var ids: [String] = []
            var token: String?
            var pages = 0
            repeat {
                var req: JSON = ["maxEntries": JSON(Int64(maxEntries))]
                if let token { req = req.setting("startingToken", .string(token)) }
                let r = call(.listVolumes, req)
                guard let j = ok(r) else { return (ids, pages, describe(r)) }
                pages += 1
                ids += (j["entries"]?.array ?? []).compactMap { $0["volumeId"]?.string ?? $0["volume"]?["volumeId"]?.string }
                token = j["nextToken"]?.string
                if let t = token, t.isEmpty { token = nil }
            } while token != nil && pages < 1000
            return (ids, pages, nil)
        }
        if ops.has(.listVolumes) {
            let all = listAll(0)
            add("list shows the new volume", v1 != nil && all.ids.contains(v1!), all.error ?? "\(all.ids.count) volume(s)")
            let paged = listAll(1)
            add("list pages with maxEntries", paged.error == nil && Set(paged.ids) == Set(all.ids) && paged.ids.count == all.ids.count && paged.pages >= all.ids.count,
                paged.error ?? "\(paged.pages) page(s) of 1, \(paged.ids.count) volume(s), each once")
            expect("list with a bad page token → ABORTED", call(.listVolumes, ["startingToken": .string("not-a-token-\(tag)")]), 10)
        } else {
            skip("list shows the new volume", "list_volumes not implemented (optional)")
            skip("list pages with maxEntries", "list_volumes not implemented (optional)")
            skip("list with a bad page token → ABORTED", "list_volumes not implemented (optional)")
        }

        // MARK: capacity
        var infoMax = Int.max
        if let info = try? ex.runSync({ try inst.call(method: "info", Array("{}".utf8)) }), let j = try? JSON.parse(info), let m = j["maxVolumeBytes"]?.int { infoMax = m }
        if ops.has(.getCapacity) {
            let before = ok(call(.getCapacity, .object([])))?["availableCapacity"]?.int
            let rv = create(vname("cap"), size: 4 << 20)
            let after = ok(call(.getCapacity, .object([])))?["availableCapacity"]?.int
            add("capacity is reported and accounted", before != nil && after != nil && ok(rv) != nil && before! - after! >= 4 << 20,
                "available \(before.map(String.init) ?? "-") → \(after.map(String.init) ?? "-") after a 4 MiB volume (\(describe(rv).prefix(60)))")
            if let id = ok(rv)?["volumeId"]?.string { _ = delete(id) }
            if let avail = ok(call(.getCapacity, .object([])))?["availableCapacity"]?.int, avail + 4096 <= infoMax, avail + 4096 < 1 << 50 {
                expect("more than the available capacity → RESOURCE_EXHAUSTED", create(vname("toobig"), size: avail + 4096), 8)
            } else {
                skip("more than the available capacity → RESOURCE_EXHAUSTED", "not testable: the maximum volume size is below the free capacity")
            }
        } else {
            skip("capacity is reported and accounted", "get_capacity not implemented (optional)")
            skip("more than the available capacity → RESOURCE_EXHAUSTED", "get_capacity not implemented (optional)")
        }

        // MARK: controller publish
        func cpub(_ id: String, _ node: String?, readonly: Bool = false) -> Result<JSON, BerthError> {
            var req: JSON = ["volumeId": .string(id), "readonly": .bool(readonly), "accessMode": "single-node-writer", "volumeMode": "mount"]
            if let node { req = req.setting("nodeId", .string(node)) }
            return call(.controllerPublish, req)
        }
        func cunpub(_ id: String, _ node: String) -> Result<JSON, BerthError> {
            call(.controllerUnpublish, ["volumeId": .string(id), "nodeId": .string(node)])
        }
        if hasController, let v1 {
            expect("controller publish of an unknown volume → NOT_FOUND", cpub("vol-unknown-\(tag)", node1), 5)
            expect("controller publish to an unknown node → NOT_FOUND", cpub(v1, unknownNode), 5)
            expect("controller publish without nodeId → INVALID_ARGUMENT", cpub(v1, nil), 3)
            let a = cpub(v1, node1), b = cpub(v1, node1)
            add("controller publish is idempotent", ok(a) != nil && ok(b) != nil && ok(a)?["publishContext"] == ok(b)?["publishContext"],
                "first \(describe(a)); second \(describe(b))")
            expect("incompatible controller republish → ALREADY_EXISTS", cpub(v1, node1, readonly: true), 6)
            if let node2 {
                expect("single-node-writer on a second node → FAILED_PRECONDITION", cpub(v1, node2), 9)
            } else {
                add("single-node-writer on a second node → FAILED_PRECONDITION", false, "the plugin reports one node; configure two (nodes) to run this case")
            }
            expect("delete while published → FAILED_PRECONDITION", delete(v1), 9)
            _ = cunpub(v1, node1)
            expect("controller unpublish is idempotent", cunpub(v1, node1), 0)
        } else {
            for c in ["controller publish of an unknown volume → NOT_FOUND", "controller publish to an unknown node → NOT_FOUND",
                      "controller publish without nodeId → INVALID_ARGUMENT", "controller publish is idempotent",
                      "incompatible controller republish → ALREADY_EXISTS", "single-node-writer on a second node → FAILED_PRECONDITION",
                      "delete while published → FAILED_PRECONDITION", "controller unpublish is idempotent"] {
                skip(c, "controller_publish not implemented (optional; the step is a no-op)")
            }
        }

        // MARK: node stage / publish
        struct Pub { var staging: String; var target: String }
        func stage(_ id: String, _ staging: String, mode: String = "mount") -> Result<JSON, BerthError> {
            guard hasStage else { return .success(.object([])) }
            // CSI: the CO creates the staging directory (the plugin creates the target).
            try? FileManager.default.createDirectory(atPath: staging, withIntermediateDirectories: true)
            return call(.nodeStage, ["volumeId": .string(id), "nodeId": .string(node1), "stagingPath": .string(staging),
                                                        "accessMode": "single-node-writer", "volumeMode": .string(mode), "publishContext": .object([])])
        }
        func unstage(_ id: String, _ staging: String) -> Result<JSON, BerthError> {
            guard hasStage else { return .success(.object([])) }
            return call(.nodeUnstage, ["volumeId": .string(id), "nodeId": .string(node1), "stagingPath": .string(staging)])
        }
        func npub(_ id: String, _ p: Pub, readonly: Bool = false, mode: String = "mount") -> Result<JSON, BerthError> {
            var req: JSON = ["volumeId": .string(id), "nodeId": .string(node1), "targetPath": .string(p.target), "readonly": .bool(readonly),
                             "accessMode": "single-node-writer", "volumeMode": .string(mode), "publishContext": .object([])]
            if hasStage { req = req.setting("stagingPath", .string(p.staging)) }
            return call(.nodePublish, req)
        }
        func nunpub(_ id: String, _ p: Pub) -> Result<JSON, BerthError> {
            call(.nodeUnpublish, ["volumeId": .string(id), "nodeId": .string(node1), "targetPath": .string(p.target)])
        }
        func firstFailure(_ rs: [Result<JSON, BerthError>]) -> String? {
            for (i, r) in rs.enumerated() { if case .failure(let e) = r { return "call \(i + 1): \(e.statusName): \(e.message)" } }
            return nil
        }

        expect("node publish of an unknown volume → NOT_FOUND", npub("vol-unknown-\(tag)", Pub(staging: freshPath(stagingRoot), target: freshPath(targetRoot))), 5)
        if let v1 {
            let p = Pub(staging: freshPath(stagingRoot), target: freshPath(targetRoot))
            var rs: [Result<JSON, BerthError>] = []
            if hasController { rs.append(cpub(v1, node1)) }
            for _ in 0..<10 { rs.append(stage(v1, p.staging)) }
            for _ in 0..<10 { rs.append(npub(v1, p)) }
            let mounted = MountTable.isMountPoint(p.target)
            let exists = FileManager.default.fileExists(atPath: p.target)
            let incompatible = npub(v1, p, readonly: true)
            var down: [Result<JSON, BerthError>] = []
            for _ in 0..<10 { down.append(nunpub(v1, p)) }
            let stillMounted = MountTable.isMountPoint(p.target)
            let targetLeft = FileManager.default.fileExists(atPath: p.target) || (try? FileManager.default.destinationOfSymbolicLink(atPath: p.target)) != nil
            for _ in 0..<10 { down.append(unstage(v1, p.staging)) }
            if hasController { down.append(cunpub(v1, node1)) }
            let fail = firstFailure(rs) ?? firstFailure(down)
            add("node stage, publish, unpublish, unstage ×10", fail == nil && exists && !stillMounted,
                fail ?? "target \(exists ? "present" : "MISSING") after publish\(mounted ? " (a mount point)" : ""), \(stillMounted ? "STILL MOUNTED" : "not mounted") after unpublish")
            add("incompatible node republish → ALREADY_EXISTS", status(incompatible) == 6, "readonly at the same target: \(describe(incompatible))")
            add("the plugin removes the target at unpublish", fail == nil && !targetLeft,
                fail ?? (targetLeft ? "\(p.target) still exists after node unpublish; the plugin creates the target at publish and removes it at unpublish (CSI)" : "target gone after unpublish"))
        }
        out += rollbackCases(create: { create(vname($0)) }, delete: delete,
                             controller: { id, up in hasController ? (up ? cpub(id, node1) : cunpub(id, node1)) : .success(.object([])) },
                             stage: stage, unstage: unstage, npub: { npub($0, Pub(staging: $1, target: $2)) },
                             nunpub: { nunpub($0, Pub(staging: "", target: $1)) }, fresh: { freshPath($0 ? stagingRoot : targetRoot) },
                             forced: { op, req in
            do {
                _ = try ex.runSync { () throws -> JSON in _ = try ops.call(op, req); throw ForcedRollback() }
                return nil
            } catch is ForcedRollback { return nil } catch { return "\(error)" }
        })
        expect("node unpublish of an unknown target → OK", nunpub(v1 ?? "vol-unknown", Pub(staging: "", target: freshPath(targetRoot))), 0)

        // MARK: snapshots
        if ops.has(.createSnapshot), ops.has(.deleteSnapshot), let v1 {
            let other = ok(create(vname("other")))?["volumeId"]?.string
            let s1 = call(.createSnapshot, ["name": .string(vname("snap1")), "sourceVolumeId": .string(v1)])
            let sid = ok(s1)?["snapshotId"]?.string
            if let sid { snapshots.append(sid) }
            add("snapshot create", sid != nil, describe(s1))
            let s2 = call(.createSnapshot, ["name": .string(vname("snap1")), "sourceVolumeId": .string(v1)])
            add("snapshot create is idempotent", sid != nil && ok(s2)?["snapshotId"]?.string == sid, "first \(sid ?? "-"), second \(describe(s2))")
            if let other {
                expect("same snapshot name, other source → ALREADY_EXISTS", call(.createSnapshot, ["name": .string(vname("snap1")), "sourceVolumeId": .string(other)]), 6)
            } else {
                add("same snapshot name, other source → ALREADY_EXISTS", false, "could not create a second volume")
            }
            expect("snapshot of an unknown volume → NOT_FOUND", call(.createSnapshot, ["name": .string(vname("snapx")), "sourceVolumeId": .string("vol-unknown-\(tag)")]), 5)
            expect("snapshot without sourceVolumeId → INVALID_ARGUMENT", call(.createSnapshot, ["name": .string(vname("snapy"))]), 3)
            if ops.has(.listSnapshots) {
                let bySource = call(.listSnapshots, ["sourceVolumeId": .string(v1)])
                let ids = (ok(bySource)?["entries"]?.array ?? []).compactMap { $0["snapshotId"]?.string ?? $0["snapshot"]?["snapshotId"]?.string }
                let bad = call(.listSnapshots, ["startingToken": .string("not-a-token-\(tag)")])
                add("snapshots list (by source; bad token → ABORTED)", sid != nil && ids.contains(sid!) && status(bad) == 10,
                    "by source: \(describe(bySource).prefix(100)); bad token: \(describe(bad))")
            } else {
                skip("snapshots list (by source; bad token → ABORTED)", "list_snapshots not implemented (optional)")
            }

            // Data: write through a published target, snapshot, restore into a new volume, read it back.
            if let dataVol = ok(create(vname("data")))?["volumeId"]?.string {
                let p = Pub(staging: freshPath(stagingRoot), target: freshPath(targetRoot))
                var steps: [Result<JSON, BerthError>] = []
                if hasController { steps.append(cpub(dataVol, node1)) }
                steps.append(stage(dataVol, p.staging))
                steps.append(npub(dataVol, p))
                let payload = "berth conformance \(tag)\n"
                let wrote = firstFailure(steps) == nil && FileManager.default.createFile(atPath: p.target + "/hello.txt", contents: Data(payload.utf8))
                let snap = call(.createSnapshot, ["name": .string(vname("datasnap")), "sourceVolumeId": .string(dataVol)])
                if let s = ok(snap)?["snapshotId"]?.string { snapshots.append(s) }
                try? FileManager.default.removeItem(atPath: p.target + "/hello.txt")
                steps = [nunpub(dataVol, p), unstage(dataVol, p.staging)]
                if hasController { steps.append(cunpub(dataVol, node1)) }
                let restored = create(vname("restored"), extra: [("source", ["snapshotId": ok(snap)?["snapshotId"] ?? .null])])
                var readBack: String?
                if let rid = ok(restored)?["volumeId"]?.string {
                    let q = Pub(staging: freshPath(stagingRoot), target: freshPath(targetRoot))
                    var up: [Result<JSON, BerthError>] = []
                    if hasController { up.append(cpub(rid, node1)) }
                    up.append(stage(rid, q.staging))
                    up.append(npub(rid, q))
                    if firstFailure(up) == nil { readBack = try? String(contentsOfFile: q.target + "/hello.txt", encoding: .utf8) }
                    steps += [nunpub(rid, q), unstage(rid, q.staging)]
                    if hasController { steps.append(cunpub(rid, node1)) }
                    if let f = firstFailure(up) { steps.append(.failure(BerthError(plugin: inst.name, operation: "publish restored", status: .internal, message: f))) }
                }
                add("restore from a snapshot brings the data back", wrote && readBack == payload && firstFailure(steps) == nil,
                    !wrote ? "could not write through the published target (\(firstFailure(steps) ?? "no mount?"))"
                        : readBack == payload ? "file written through the mount, deleted after the snapshot, read back from the restored volume"
                        : "restore: \(describe(restored).prefix(120)); read back \(readBack.map { "\"\($0)\"" } ?? "nothing"); \(firstFailure(steps) ?? "")")
            }
            if let sid {
                let a = call(.deleteSnapshot, ["snapshotId": .string(sid)]), b = call(.deleteSnapshot, ["snapshotId": .string(sid)])
                add("snapshot delete, and delete again → OK", status(a) == 0 && status(b) == 0, "first \(describe(a)); second \(describe(b))")
            } else {
                add("snapshot delete, and delete again → OK", false, "no snapshot was created")
            }
        } else {
            for c in ["snapshot create", "snapshot create is idempotent", "same snapshot name, other source → ALREADY_EXISTS",
                      "snapshot of an unknown volume → NOT_FOUND", "snapshot without sourceVolumeId → INVALID_ARGUMENT",
                      "snapshots list (by source; bad token → ABORTED)", "restore from a snapshot brings the data back", "snapshot delete, and delete again → OK"] {
                skip(c, "snapshots not implemented (optional)")
            }
        }

        // MARK: expand
        if ops.has(.expandVolume) {
            let b = create(vname("block"), size: 1 << 20, mode: "block")
            if let bid = ok(b)?["volumeId"]?.string {
                let e = call(.expandVolume, ["volumeId": .string(bid), "capacityBytes": JSON(Int64(2 << 20))])
                let e2 = call(.expandVolume, ["volumeId": .string(bid), "capacityBytes": JSON(Int64(2 << 20))])
                add("expand grows the volume (and again is OK)", (ok(e)?["capacityBytes"]?.int ?? 0) >= 2 << 20 && (ok(e2)?["capacityBytes"]?.int ?? 0) >= 2 << 20,
                    "1 MiB block volume to 2 MiB: \(describe(e)); again: \(describe(e2))")
            } else {
                add("expand grows the volume (and again is OK)", false, "could not create a block volume: \(describe(b))")
            }
            expect("expand of an unknown volume → NOT_FOUND", call(.expandVolume, ["volumeId": .string("vol-unknown-\(tag)"), "capacityBytes": 2097152]), 5)
        } else {
            skip("expand grows the volume (and again is OK)", "expand_volume not implemented (optional)")
            skip("expand of an unknown volume → NOT_FOUND", "expand_volume not implemented (optional)")
        }

        // MARK: the whole lifecycle, ×10, every step twice
        do {
            var failure: String?
            var ids = Set<String>()
            for i in 0..<10 where failure == nil {
                let n = vname("cycle")
                let a = create(n), b = create(n)
                guard let id = ok(a)?["volumeId"]?.string, ok(b)?["volumeId"]?.string == id else {
                    failure = "cycle \(i + 1): create twice: \(describe(a)) / \(describe(b))"
                    break
                }
                ids.insert(id)
                let p = Pub(staging: freshPath(stagingRoot), target: freshPath(targetRoot))
                var rs: [Result<JSON, BerthError>] = []
                if hasController { rs += [cpub(id, node1), cpub(id, node1)] }
                rs += [stage(id, p.staging), stage(id, p.staging), npub(id, p), npub(id, p), nunpub(id, p), nunpub(id, p),
                       unstage(id, p.staging), unstage(id, p.staging)]
                if hasController { rs += [cunpub(id, node1), cunpub(id, node1)] }
                rs += [delete(id), delete(id)]
                if let f = firstFailure(rs) { failure = "cycle \(i + 1): \(f)" }
                created.removeAll { $0 == id }
            }
            add("full lifecycle ×10, every step twice", failure == nil, failure ?? "create, controller publish, stage, publish, unpublish, unstage, controller unpublish, delete; \(ids.count) distinct volume ids")
            if ops.has(.listVolumes) {
                let all = listAll(0)
                let leaked = ids.intersection(all.ids)
                add("list hides deleted volumes", all.error == nil && leaked.isEmpty, all.error ?? (leaked.isEmpty ? "none of the \(ids.count) deleted volumes listed" : "still listed: \(leaked.sorted())"))
            } else {
                skip("list hides deleted volumes", "list_volumes not implemented (optional)")
            }
        }

        // MARK: cleanup
        var leftovers: [String] = []
        if ops.has(.deleteSnapshot) { for s in snapshots where status(call(.deleteSnapshot, ["snapshotId": .string(s)])) != 0 { leftovers.append(s) } }
        for id in created {
            if hasController { for n in nodes.prefix(2) { _ = cunpub(id, n) } }
            if status(delete(id)) != 0 { leftovers.append(id) }
        }
        // Nothing of ours may stay mounted under the scratch directory.
        let stuck = MountTable.mountPoints().filter { $0.hasPrefix(scratch + "/") }
        for m in stuck { _ = umount2(m, 2) }
        add("cleanup", leftovers.isEmpty && stuck.isEmpty,
            leftovers.isEmpty && stuck.isEmpty ? "\(created.count) volume(s), \(snapshots.count) snapshot(s) deleted; nothing left mounted"
                : "could not delete \(leftovers); left mounted: \(stuck)")
        return out
    }
}

extension StorageConformance {
    typealias Call = Result<JSON, BerthError>
    /// A delete_volume rolled back after the plugin returned OK must leave the volume with its data: the host still
    /// has the volume (its namespace says so), so data removed before the commit is lost for good. The data is seen
    /// through a published target: a file written before is read back after a new publish.
    static func rollbackCases(create: (String) -> Call, delete: (String) -> Call, controller: (String, Bool) -> Call,
                              stage: (String, String, String) -> Call,
                              unstage: (String, String) -> Call, npub: (String, String, String) -> Call, nunpub: (String, String) -> Call,
                              fresh: (Bool) -> String, forced: (StorageOps.Op, JSON) -> String?) -> [CheckCase] {
        let name = "storage: a rolled-back delete keeps the volume's data"
        guard case .success(let v) = create("rollback"), let id = v["volumeId"]?.string else {
            return [CheckCase(name: name, passed: false, detail: "could not create a volume")]
        }
        func publish(_ staging: String, _ target: String) -> String? {
            if case .failure(let e) = controller(id, true) { return e.description }
            if case .failure(let e) = stage(id, staging, "mount") { return e.description }
            if case .failure(let e) = npub(id, staging, target) { return e.description }
            return nil
        }
        func unpublish(_ staging: String, _ target: String) { _ = nunpub(id, target); _ = unstage(id, staging); _ = controller(id, false) }
        defer { _ = delete(id) }
        let s1 = fresh(true), t1 = fresh(false)
        if let e = publish(s1, t1) { return [CheckCase(name: name, passed: false, detail: "publish before the delete: \(e)")] }
        let marker = "berth rollback marker \(id)\n"
        let wrote = FileManager.default.createFile(atPath: t1 + "/berth-rollback-marker", contents: Data(marker.utf8))
        unpublish(s1, t1)
        guard wrote else { return [.skip(name, "could not write a file through the published target \(t1)")] }
        if let e = forced(.deleteVolume, ["volumeId": .string(id)]) {
            return [CheckCase(name: name, passed: false, detail: "delete_volume in the forced rollback: \(e)")]
        }
        let s2 = fresh(true), t2 = fresh(false)
        if let e = publish(s2, t2) {
            return [CheckCase(name: name, passed: false, detail: "after a rolled-back delete_volume the volume still exists, but publishing it failed: \(e)")]
        }
        let back = FileManager.default.contents(atPath: t2 + "/berth-rollback-marker").map { String(decoding: $0, as: UTF8.self) }
        unpublish(s2, t2)
        return [CheckCase(name: name, passed: back == marker, detail: back == marker
            ? "delete_volume rolled back after it returned OK: the volume still has its data (deletion deferred to after_commit)"
            : "delete_volume removed the volume's data before its transaction committed; the host rolled the deletion back and the volume still exists, without its data. Remove data in an after_commit callback (on_complete, ABI 1.2; sdk-docs/kinds/storage.md)")]
    }
}

/// /proc/self/mountinfo, for checks and for tests. Read with read(2) to the end: Foundation's
/// `String(contentsOfFile:)` stops after the first read of a procfs file (about 4 KiB of it), which drops the
/// newest mounts once a host has a few dozen.
public enum MountTable {
    public static func mountPoints() -> [String] {
        guard let bytes = try? readFile("/proc/self/mountinfo") else { return [] }
        return String(decoding: bytes, as: UTF8.self).split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ", omittingEmptySubsequences: false)
            return f.count > 4 ? unescape(String(f[4])) : nil
        }
    }

    public static func isMountPoint(_ path: String) -> Bool { mountPoints().contains(path) }

    /// The mount points strictly under `dir`, deepest first (the order to unmount them in).
    public static func mountPoints(under dir: String) -> [String] {
        mountPoints().filter { $0.hasPrefix(dir + "/") }.sorted { $0.count > $1.count }
    }

    static func unescape(_ s: String) -> String {
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "\\"), i + 3 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
