// ipam-pool's per-node blocks (cluster mode): nodes allocate in distinct blocks, claim another when theirs are full,
// borrow only when no block is free, fixed addresses follow their identity to any node, counts stay right; and 3
// hosts on a real etcd (each its own engine connection, executor and plugin instance) allocating at once.
@testable import BerthStore
import BerthKinds
import BerthPlugins
import BerthWire
import Foundation
import XCTest

extension IpamPoolTests {
    /// The aligned /len block of an IPv4 address, as "a.b.c.d/len".
    func block(_ ip: String, _ len: Int) -> String {
        let p = ip.split(separator: ".").map { UInt32($0)! }
        let v = (p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]) & (len == 0 ? 0 : ~UInt32(0) << UInt32(32 - len))
        return "\(v >> 24).\(v >> 16 & 255).\(v >> 8 & 255).\(v & 255)/\(len)"
    }

    func testNodesAllocateInDistinctBlocks() throws {
        try nodesAllocateInDistinctBlocks(nodeCounters: false)
        try nodesAllocateInDistinctBlocks(nodeCounters: true)
    }

    /// With and without per-node counters: the blocks are the same and the counts stay right; per-node counters
    /// write cnt/<P>/<node> instead of the pool's count/<P>.
    func nodesAllocateInDistinctBlocks(nodeCounters: Bool) throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.20.0.0/24"]], "blockSize": 28, "nodeCounters": .bool(nodeCounters)])
        var byNode: [String: [String]] = [:]
        for i in 0..<4 {
            for node in ["a", "b", "c"] { byNode[node, default: []].append(try n.addIP("\(node)-\(i)", "eth0", ["node": .string(node)])) }
        }
        let blocks = byNode.mapValues { Set($0.map { block($0, 28) }) }
        for (node, b) in blocks { XCTAssertEqual(b.count, 1, "node \(node) got \(byNode[node]!)") }
        XCTAssertEqual(Set(blocks.values.map { $0.first! }).count, 3, "\(byNode)")
        XCTAssertEqual(try n.kv("blk/p/4/0a140000"), "a")  // the lowest block went to the first node
        let cap = try n.capacity()
        XCTAssertEqual(cap["active"]?.int, 12)
        XCTAssertEqual(cap["free"]?.int, 253 - 12)
        // Releases on each node keep the sum right.
        try n.del("a-0")
        try n.del("b-1")
        XCTAssertEqual(try n.capacity()["active"]?.int, 10)
        XCTAssertEqual(try n.capacity()["free"]?.int, 253 - 10)
        XCTAssertEqual(try n.kv("cnt/p/b") != nil, nodeCounters, "node b's counter delta exists only with nodeCounters")
    }

    /// nodeCounters is part of the stored pool: after a restart (or on another berthd of the site, which reads the
    /// pool from the store) an ADD for a node still writes that node's delta, not the pool's count/<P>.
    func testNodeCountersSurviveARestart() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.20.0.0/24"]], "nodeCounters": true])
        _ = try n.addIP("a-0", "eth0", ["node": "a"])
        let pooled = try n.kv("count/p")
        try n.restart()
        _ = try n.addIP("b-0", "eth0", ["node": "b"])
        XCTAssertNotNil(try n.kv("cnt/p/b"), "node b's counter delta")
        XCTAssertEqual(try n.kv("count/p"), pooled, "the pool's own counters are not written by a node's ADD")
        XCTAssertEqual(try n.capacity()["active"]?.int, 2)
    }

    func testNodeWithFullBlocksClaimsAnother() throws {
        // /29 blocks: 10.20.0.0/29 holds .2-.7 (.1 is the gateway), the next .8-.15.
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.20.0.0/24"]], "blockSize": 29])
        let ips = try (0..<9).map { try n.addIP("c\($0)", "eth0", ["node": "a"]) }
        XCTAssertEqual(ips, ["10.20.0.2", "10.20.0.3", "10.20.0.4", "10.20.0.5", "10.20.0.6", "10.20.0.7",
                             "10.20.0.8", "10.20.0.9", "10.20.0.10"])
        XCTAssertEqual(try n.kv("blk/p/4/0a140008"), "a")
        // Another node does not take from a's blocks while blocks are free.
        XCTAssertEqual(try n.addIP("b0", "eth0", ["node": "b"]), "10.20.0.16")
        // An address a released is reused by a (round robin within its blocks) before a claims a third block.
        try n.del("c3")
        for i in 9..<14 { _ = try n.addIP("c\(i)", "eth0", ["node": "a"]) }
        XCTAssertEqual(try n.addIP("c14", "eth0", ["node": "a"]), "10.20.0.5")
        XCTAssertEqual(try n.addIP("c15", "eth0", ["node": "a"]), "10.20.0.24")  // full: the next free block
    }

    func testBorrowingOnlyWhenNoBlockIsFree() throws {
        // A /28 in /29 blocks: .2-.7 and .8-.14, two blocks for three nodes.
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.20.0.0/28"]], "blockSize": 29])
        XCTAssertEqual(try n.addIP("a0", "eth0", ["node": "a"]), "10.20.0.2")
        XCTAssertEqual(try n.addIP("b0", "eth0", ["node": "b"]), "10.20.0.8")
        let c0 = try n.addIP("c0", "eth0", ["node": "c"])  // no block left: borrowed
        XCTAssertFalse(["10.20.0.2", "10.20.0.8"].contains(c0), c0)
        XCTAssertNil(try n.kv("nblk/p/c/4/0a140000"))
        XCTAssertNil(try n.kv("nblk/p/c/4/0a140008"))
        var all = Set(["10.20.0.2", "10.20.0.8", c0])
        for i in 1..<11 { all.insert(try n.addIP("x\(i)", "eth0", ["node": .string(["a", "b", "c"][i % 3])])) }
        XCTAssertEqual(all.count, 13, "every address once: \(all.sorted())")
        expectError(IpamPoolTests.EXHAUSTED, "no IP addresses available") { try n.add("x99", "eth0", ["node": "c"]) }
        XCTAssertEqual(try n.capacity()["free"]?.int, 0)
        XCTAssertEqual(try n.capacity()["active"]?.int, 13)
    }

    func testFixedAddressFollowsItsIdentityToAnotherNode() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.20.0.0/24"]], "blockSize": 28, "reserved": ["10.20.0.100"]])
        let ident: JSON = ["app": "db", "ordinal": 0, "releasePolicy": "never"]
        let first = try n.addIP("pod-a", "eth0", ["node": "a", "identity": ident])
        XCTAssertEqual(first, "10.20.0.100")  // a stateful identity takes the lowest reserved address
        try n.del("pod-a")
        XCTAssertEqual(try n.addIP("pod-b", "eth0", ["node": "b", "identity": ident]), first)
        // A requested address in another node's block is granted as before.
        _ = try n.addIP("a1", "eth0", ["node": "a"])
        XCTAssertEqual(try n.addIP("req", "eth0", ["node": "c", "ips": ["10.20.0.3"]]), "10.20.0.3")
        XCTAssertEqual(try n.capacity()["active"]?.int, 3)
    }

    func testBadBlockSizeIsRefusedAndChangesNothing() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.20.0.0/24"]]])
        for bad: JSON in [31, 8, "26", 26.5] {
            expectError(IpamPoolTests.INVALID, "blockSize must be a prefix length from 16 to 30") {
                _ = try n.admin("pool.import", ["name": "q", "ranges": [["subnet": "10.21.0.0/24"]], "blockSize": bad])
            }
        }
        expectError(IpamPoolTests.INVALID, "blockSize6 must be a prefix length from 96 to 126") {
            _ = try n.admin("pool.import", ["name": "q", "ranges": [["subnet": "fd00::/64"]], "blockSize6": 64])
        }
        XCTAssertEqual(try n.admin("pool.list")["pools"]?.array?.count, 1)
    }

    /// Importing a pool again lowers its blocks' marks to its ranges' (kept right by the import); an address released
    /// before (a free/ entry) is then found lazily as well, and must still be handed out once only.
    func testReimportHandsOutReleasedAddressesOnce() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.20.0.0/28"]], "blockSize": 29])
        for i in 0..<3 { _ = try n.addIP("c\(i)", "eth0", ["node": "a"]) }  // .2 .3 .4
        try n.del("c1")  // .3: below the block's mark, a free/ entry
        _ = try n.admin("pool.import", ["name": "p", "ranges": [["subnet": "10.20.0.0/28"]], "blockSize": 29, "exclude": ["10.20.0.14"]])
        var got: [String] = []
        for i in 0..<10 { got.append(try n.addIP("n\(i)", "eth0", ["node": "a"])) }
        XCTAssertEqual(Set(got).count, 10, "\(got)")
        XCTAssertFalse(got.contains("10.20.0.2") || got.contains("10.20.0.4") || got.contains("10.20.0.14"), "\(got)")
        expectError(IpamPoolTests.EXHAUSTED, "no IP addresses available") { try n.add("x", "eth0", ["node": "a"]) }
        XCTAssertEqual(try n.capacity()["active"]?.int, 12)
    }

    /// A pool whose allocation state was written by the layout before blocks (one hwm/ per range, one cursor): the
    /// addresses it handed out stay taken, one it released is found again, and its mark is where blocks start from.
    func testStateFromBeforeBlocksKeepsWorking() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.20.0.0/24"]], "blockSize": 29])
        let store = n.store, ns = n.spec.name
        // As the old layout leaves it after handing out .2-.11 and releasing .4: records, mark at .12, .4 in free/.
        try n.ex.runSync {
            func put(_ k: String, _ v: String) throws { try Array(k.utf8).withUnsafeBytes { kb in try Array(v.utf8).withUnsafeBytes { try store.kvPut(ns, kb, $0) } } }
            for i in 2...11 where i != 4 {
                try put("addr/p/4/0a1400" + String(format: "%02x", i), #"{"s":"active","p":"available","cid":"old\#(i)","if":"eth0"}"#)
            }
            try put("free/p/4/0a140004", "")
            try put("hwm/p/4/0a140001", "0a14000c")
            try put("last/p/4", "0a14000b")
            try put("count/p", #"{"4":[253,0,9,0]}"#)
        }
        var got = try (0..<4).map { try n.addIP("new\($0)", "eth0", ["node": "a"]) }
        got.sort { $0.split(separator: ".").last.map { Int($0)! }! < $1.split(separator: ".").last.map { Int($0)! }! }
        XCTAssertEqual(got, ["10.20.0.4", "10.20.0.12", "10.20.0.13", "10.20.0.14"])
        XCTAssertEqual(try n.capacity()["active"]?.int, 13)
    }
}

/// 3 hosts on one real etcd: each its own engine connection, executor and ipam-pool instance on the same prefix,
/// each allocating for its own node at the same time.
final class IpamBlocksEtcdTests: XCTestCase {
    func testThreeHostsOnEtcdAllocateInTheirOwnBlocks() throws {
        let so = IpamPoolTests.soPath
        guard FileManager.default.fileExists(atPath: so) else { throw XCTSkip("build the plugin first (swift build): \(so) is missing") }
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let config: JSON = ["pools": [["name": "p", "ranges": [["subnet": "10.30.0.0/22"]], "nodeCounters": true]]]
        let loader = Loader(copyDir: IpamPoolTests.copyDir)
        var hosts: [(Executor, PluginInstance)] = []
        for _ in 0..<3 {
            let ex = Executor(store: try EtcdStore(EtcdSettings(endpoints: [etcd.endpoint], site: "blocks")))
            ex.start()
            let spec = PluginSpec(name: "net", path: so, config: config)
            hosts.append((ex, try loader.instantiate(try loader.load(spec), spec: spec, executor: ex, log: { _, _ in })))
        }
        defer { for (ex, inst) in hosts { inst.destroy(); ex.stop() } }
        let per = 40
        let lock = NSLock()
        var got: [Int: [String]] = [:]
        var failure: Error?
        DispatchQueue.concurrentPerform(iterations: 3) { h in
            let (ex, inst) = hosts[h]
            let ops = inst.networkOps!
            do {
                for i in 0..<per {
                    let req: JSON = ["network": "net", "containerID": .string("h\(h)-\(i)"), "ifname": "eth0", "node": .string("node-\(h)")]
                    let r = try ex.runSync { try ops.call(.add, req) }
                    let ip = String(r["ips"]?[0]?["address"]?.string?.split(separator: "/").first ?? "")
                    lock.lock(); got[h, default: []].append(ip); lock.unlock()
                }
            } catch { lock.lock(); failure = error; lock.unlock() }
        }
        if let failure { throw failure }
        let all = got.values.flatMap { $0 }
        XCTAssertEqual(Set(all).count, 3 * per, "no address twice")
        // 40 addresses need one /26 block each (the first block also has the gateway): at most 2 blocks per node, and
        // no block shared by two nodes.
        var owner: [String: Int] = [:]
        for (h, ips) in got {
            for ip in ips {
                let p = ip.split(separator: ".").map { Int($0)! }
                let b = "\(p[2]).\(p[3] / 64)"
                if let o = owner[b] { XCTAssertEqual(o, h, "block \(b) used by hosts \(o) and \(h)") }
                owner[b] = h
            }
        }
        let conflicts = hosts.reduce(UInt64(0)) { $0 + $1.0.conflicts }
        // Conflicts happen only when two hosts claim the same block at once: a few per claim at most, never per ADD.
        XCTAssertLessThan(conflicts, 12, "conflicts: \(conflicts) for \(3 * per) ADDs")
        let (ex, inst) = hosts[0]
        let ops = inst.networkOps!
        let cap = try ex.runSync { try ops.call(.capacity, ["network": "net"]) }
        XCTAssertEqual(cap["active"]?.int, 3 * per)
        print("3 hosts on etcd: \(3 * per) ADDs, \(conflicts) conflicts")
    }

    /// Claims read from the claim mark, not every claimed block: after 150 nodes each claimed a block (more than one
    /// etcd Txn may compare), the next node's first ADD claims the next block in an ordinary commit. Before the mark,
    /// that ADD read all 150 claims and failed (RESOURCE_EXHAUSTED, --max-txn-ops; it is now an exclusive commit).
    /// The mark also reaches "end" when every block is claimed, and an import with other ranges drops it.
    func testClaimsReadFromTheClaimMarkNotEveryClaimedBlock() throws {
        let so = IpamPoolTests.soPath
        guard FileManager.default.fileExists(atPath: so) else { throw XCTSkip("build the plugin first (swift build): \(so) is missing") }
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let config: JSON = ["pools": [["name": "p", "ranges": [["subnet": "10.40.0.0/20"]], "blockSize": 28, "nodeCounters": true]]]
        let store = try EtcdStore(EtcdSettings(endpoints: [etcd.endpoint], site: "marks"))
        let ex = Executor(store: store)
        ex.start()
        let spec = PluginSpec(name: "net", path: so, config: config)
        let loader = Loader(copyDir: IpamPoolTests.copyDir)
        let inst = try loader.instantiate(try loader.load(spec), spec: spec, executor: ex, log: { _, _ in })
        defer { inst.destroy(); ex.stop() }
        let ops = inst.networkOps!
        func add(_ node: Int) throws -> String {
            let r = try ex.runSync { try ops.call(.add, ["network": "net", "containerID": .string("c\(node)"), "ifname": "eth0", "node": .string("n\(node)")]) }
            return String(r["ips"]?[0]?["address"]?.string?.split(separator: "/").first ?? "")
        }
        func mark() throws -> String? { try StoreContract.get(store, "net", Array("bclm/p/4".utf8)).map { String(decoding: $0, as: UTF8.self) } }
        for n in 0..<150 { _ = try add(n) }
        XCTAssertEqual(try mark(), "0a280960", "the mark is the block after the 150 claimed (10.40.9.96)")
        XCTAssertEqual(try add(150), "10.40.9.96", "node 150 claims the next block")
        XCTAssertEqual(store.exclusiveCommits.load(ordering: .relaxed), 0, "no claim read more than one Txn compares")
        for n in 151..<256 { _ = try add(n) }
        XCTAssertEqual(try mark(), "end", "every block of the /20 is claimed")
        XCTAssertEqual(try add(256), "10.40.0.3", "then node 256 borrows (node 0 has 10.40.0.2; 10.40.0.1 is the gateway)")
        XCTAssertEqual(store.exclusiveCommits.load(ordering: .relaxed), 1, "borrowing lists every claimed block: exclusive")
        _ = try NetworkService.adminInSteps(ex, { inst }, "pool.import", ["name": "p", "ranges": [["subnet": "10.40.0.0/20"]], "blockSize": 28,
                                                                          "nodeCounters": true, "exclude": ["10.40.15.255"]])
        XCTAssertEqual(try mark(), "end", "an import with the same ranges and block size keeps the mark")
        _ = try NetworkService.adminInSteps(ex, { inst }, "pool.import", ["name": "p", "ranges": [["subnet": "10.40.0.0/20"], ["subnet": "10.41.0.0/24"]],
                                                                          "blockSize": 28, "nodeCounters": true])
        XCTAssertNil(try mark(), "an import drops the mark (and the 256 nodes' counters and 256 blocks' marks, one prefix delete each)")
        XCTAssertEqual(try add(257), "10.41.0.2", "a block of the new range is claimed (its first address is its gateway)")
    }

    /// A host that finds the pool already stored by another (a second berthd, or the same one restarted) keeps the
    /// pool's per-node counters: its ADD writes its node's delta, not the pool's count/<P> every host would write.
    /// (The stored definition once dropped nodeCounters, so every host but the importing one contended on count/p.)
    func testAHostThatFindsThePoolStoredKeepsPerNodeCounters() throws {
        let so = IpamPoolTests.soPath
        guard FileManager.default.fileExists(atPath: so) else { throw XCTSkip("build the plugin first (swift build): \(so) is missing") }
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let config: JSON = ["pools": [["name": "p", "ranges": [["subnet": "10.31.0.0/24"]], "nodeCounters": true]]]
        let settings = EtcdSettings(endpoints: [etcd.endpoint], site: "stored-def")
        let loader = Loader(copyDir: IpamPoolTests.copyDir)
        for (h, node) in ["node-a", "node-b"].enumerated() {  // node-a's host imports the pool; node-b's host finds it
            let ex = Executor(store: try EtcdStore(settings))
            ex.start()
            let spec = PluginSpec(name: "net", path: so, config: config)
            let inst = try loader.instantiate(try loader.load(spec), spec: spec, executor: ex, log: { _, _ in })
            defer { inst.destroy(); ex.stop() }
            let ops = inst.networkOps!
            for i in 0..<3 {
                _ = try ex.runSync { try ops.call(.add, ["network": "net", "containerID": .string("c\(h)-\(i)"), "ifname": "eth0", "node": .string(node)]) }
            }
            XCTAssertEqual(try ex.runSync { try ops.call(.capacity, ["network": "net"]) }["active"]?.int, 3 * (h + 1))
        }
        let probe = try EtcdStore(settings)
        func counts(_ key: String) throws -> JSON? { try StoreContract.get(probe, "net", Array(key.utf8)).flatMap { try JSON.parse($0) } }
        XCTAssertEqual(try counts("cnt/p/node-a")?["4"]?[2]?.int, 3, "node-a's delta")
        XCTAssertEqual(try counts("cnt/p/node-b")?["4"]?[2]?.int, 3, "node-b's delta, written by the host that found the pool stored")
        XCTAssertEqual(try counts("count/p")?["4"]?[2]?.int, 0, "no ADD wrote the pool's own counters")
    }
}
