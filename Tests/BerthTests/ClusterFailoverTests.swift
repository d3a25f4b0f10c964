// Cluster mode's scheduling failover (issue 18): 3 real berthd on a real etcd; the scheduling leader is kill -9'd in
// the middle of a StatefulApp's ordered rollout. Another berthd takes over within the lease TTL and finishes it; no
// ordinal is ever placed twice; each ordinal keeps its fixed address, MAC and volume (the one on the dead node waits
// for it, and returns there when its berthd comes back).
import BerthWire
import Foundation
import XCTest

final class ClusterFailoverTests: XCTestCase {
    static let lease = 3
    static let pool: JSON = [
        "defaultPool": "fixed",
        "pools": [[
            "name": "fixed",
            "ranges": [["subnet": "10.61.0.0/24", "start": "10.61.0.10", "end": "10.61.0.99", "gateway": "10.61.0.1"]],
            "reserved": ["10.61.0.10", "10.61.0.11", "10.61.0.12", "10.61.0.13"],
            "macs": ["10.61.0.10": "52:54:00:61:00:10", "10.61.0.11": "52:54:00:61:00:11", "10.61.0.12": "52:54:00:61:00:12",
                     "10.61.0.13": "52:54:00:61:00:13"],
        ]],
    ]

    var volumes = ""

    override func tearDown() {
        if !volumes.isEmpty { removeTree(volumes) }
        super.tearDown()
    }

    /// One berthd of the site: node `node`, the stateful scheduler, the pool and storage-local on one data root shared by
    /// the three (they run on one machine: the root stands for storage every node reaches).
    func berthd(_ node: String, _ etcd: EtcdProcess) throws -> Daemon {
        let plugins: JSON = [
            ["name": "stateful", "path": .string(Paths.plugin("sched-stateful"))],
            ["name": "vlan", "path": .string(Paths.plugin("ipam-pool")), "config": Self.pool],
            ["name": "local", "path": .string(Paths.plugin("storage-local")),
             "config": ["root": .string(volumes), "capacityBytes": 1_073_741_824, "nodes": ["n1", "n2", "n3"]]],
        ]
        return try Daemon(plugins: plugins, tag: "cluster-\(node)",
                          extra: [("site", "failover"), ("node", .string(node)),
                                  ("store", ["engine": "etcd", "endpoints": [.string(etcd.endpoint)], "leaseSeconds": .number(Double(Self.lease))])])
    }

    func cluster(_ d: Daemon) throws -> JSON { try d.request("GET", "/healthz").1["store"]?["cluster"] ?? .null }

    /// Two berthd of site `site` on `etcd`, nodes `site.prefix(1)` + "a" and + "b", with ipam-pool on the test's pool;
    /// `store` adds to (or replaces) the store keys, whose lease is the class's.
    func pair(_ etcd: EtcdProcess, site: String, store more: [(String, JSON)] = []) throws -> (Daemon, Daemon) {
        var store: JSON = ["engine": "etcd", "endpoints": [.string(etcd.endpoint)], "leaseSeconds": .number(Double(Self.lease))]
        for (k, v) in more { store = store.setting(k, v) }
        let plugins: JSON = [["name": "vlan", "path": .string(Paths.plugin("ipam-pool")), "config": Self.pool]]
        let n = String(site.prefix(1))
        return (try Daemon(plugins: plugins, tag: "cluster-\(n)a", extra: [("site", .string(site)), ("node", .string(n + "a")), ("store", store)]),
                try Daemon(plugins: plugins, tag: "cluster-\(n)b", extra: [("site", .string(site)), ("node", .string(n + "b")), ("store", store)]))
    }

    func instance(_ d: Daemon, _ ord: Int) throws -> JSON { try d.request("GET", "/v1/instances/StatefulApp/db/\(ord)").1 }

    func placed(_ d: Daemon, _ ord: Int) throws -> JSON {
        try waitFor("db-\(ord) placed", { try instance(d, ord) }) { $0["state"]?.string == "placed" }
    }

    func running(_ d: Daemon, _ ord: Int) throws {
        let (st, body) = try d.request("POST", "/v1/instances/StatefulApp/db/\(ord)/running")
        XCTAssertEqual(st, 200, body.serialized)
    }

    /// What identifies an ordinal's placement: node, address, MAC and volume.
    func identity(_ i: JSON) -> [String] {
        [i["ips"]?[0]?.string ?? "", i["addresses"]?[0]?["mac"]?.string ?? "", i["volumes"]?[0]?["volumeId"]?.string ?? ""]
    }

    func testLeaderKilledMidRolloutAnotherFinishesItPlacingNothingTwice() throws {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        volumes = tempDir("cluster-volumes")
        let ds = try ["n1", "n2", "n3"].map { try berthd($0, etcd) }
        // One leader, seen alike by all three.
        let agreed = try waitFor("a leader all three agree on", { .array(try ds.map { try cluster($0)["leader"] ?? .null }) }) {
            guard let a = $0.array, let first = a.first?.string else { return false }
            return a.allSatisfy { $0.string == first }
        }
        let leader = agreed[0]!.string!
        let li = ["n1", "n2", "n3"].firstIndex(of: leader)!
        let survivor = ds[(li + 1) % 3]
        _ = try waitFor("3 nodes up", { try survivor.request("GET", "/v1/nodes").1 }) {
            ($0["nodes"]?.array ?? []).filter { $0["state"]?.string == "up" }.count == 3
        }
        // One zone per node (the nodes joined without labels), so that the ordinals spread over the three.
        for (i, n) in ["n1", "n2", "n3"].enumerated() {
            let (st, b) = try ds[i].request("PUT", "/v1/nodes/\(n)", ["capacity": ["cpu": "2", "memory": "4Gi", "disk": "10Gi"], "labels": ["zone": .string("z\(i)")]])
            XCTAssertEqual(st, 200, b.serialized)
        }

        // An ordered rollout, applied through a berthd that does not lead: 0 running, 1 placed when the leader dies.
        let spec: JSON = ["replicas": 4, "podManagementPolicy": "OrderedReady", "resources": ["cpu": "200m", "memory": "64Mi"],
                          "network": ["name": "vlan", "releasePolicy": "immutable"], "volumes": [["name": "data", "size": "8Mi", "local": true]]]
        let (st, body) = try survivor.request("PUT", "/v1/kinds/StatefulApp/db", ["spec": spec])
        XCTAssertEqual(st, 201, body.serialized)
        let db0 = try placed(survivor, 0)
        try running(survivor, 0)
        let db1 = try placed(survivor, 1)
        XCTAssertEqual(try instance(survivor, 2)["state"]?.string, "pending", "2 waits for 1 to run")

        let killedAt = Date()
        ds[li].kill9()
        let next = try waitFor("a new leader", timeout: Double(Self.lease) + 10, { try cluster(survivor) }) {
            guard let l = $0["leader"]?.string else { return false }
            return l != leader
        }
        let takeover = Date().timeIntervalSince(killedAt)
        print("leader \(leader) killed; \(next["leader"]!.string!) leads after \(String(format: "%.2f", takeover)) s (lease TTL \(Self.lease) s)")
        XCTAssertLessThan(takeover, Double(Self.lease) + 2, "takeover within the TTL and one campaign round")
        let dead = try waitFor("node \(leader) down", { try survivor.request("GET", "/v1/nodes/\(leader)").1 }) { $0["state"]?.string == "down" }
        XCTAssertEqual(dead["state"]?.string, "down")

        // The new leader finishes the rollout: 1 runs, then 2 and 3 are placed. An ordinal on the dead node keeps its
        // node-local volume: it waits, pending, for that node.
        let onDead = [db0, db1].filter { $0["node"]?.string == leader }.compactMap { $0["ordinal"]?.int }
        for o in 0..<2 where !onDead.contains(o) { XCTAssertEqual(try instance(survivor, o)["state"]?.string, "placed") }
        if !onDead.contains(1) { try running(survivor, 1) }
        // (An OrderedReady rollout does not go past an ordinal that waits for its node: bring the node back first then.)
        if !onDead.isEmpty {
            for o in onDead {
                let w = try waitFor("db-\(o) waits for \(leader)", { try instance(survivor, o) }) {
                    $0["state"]?.string == "pending" && $0["volumeNode"]?.string == leader
                }
                XCTAssertEqual(w["previousNode"]?.string, leader, "its volume and its previous node are remembered: \(w.serialized)")
            }
        }
        try ds[li].start()  // the killed berthd comes back: its node rejoins, up
        _ = try waitFor("node \(leader) up again", { try survivor.request("GET", "/v1/nodes/\(leader)").1 }) { $0["state"]?.string == "up" }
        for o in onDead {
            let back = try placed(survivor, o)
            XCTAssertEqual(back["node"]?.string, leader, "back on its volume's node")
            XCTAssertEqual(identity(back), identity(o == 0 ? db0 : db1), "same address, MAC and volume")
        }
        if onDead.contains(1) { try running(survivor, 1) }
        for o in 2..<4 {
            _ = try placed(survivor, o)
            try running(survivor, o)
        }

        // Every berthd sees the same four placements, each with its own fixed address, MAC and volume.
        let final = try (0..<4).map { try instance(ds[li], $0) }
        XCTAssertEqual(final.map { $0["ips"]?[0]?.string ?? "" }, ["10.61.0.10", "10.61.0.11", "10.61.0.12", "10.61.0.13"])
        XCTAssertEqual(final.map { $0["addresses"]?[0]?["mac"]?.string ?? "" },
                       ["52:54:00:61:00:10", "52:54:00:61:00:11", "52:54:00:61:00:12", "52:54:00:61:00:13"])
        XCTAssertEqual(Set(final.map { $0["volumes"]?[0]?["volumeId"]?.string ?? "" }).count, 4, "a volume each")
        XCTAssertEqual(identity(final[0]), identity(db0))
        XCTAssertEqual(identity(final[1]), identity(db1))
        for d in ds { XCTAssertEqual(try (0..<4).map { try instance(d, $0)["node"] ?? .null }, final.map { $0["node"] ?? .null }) }

        // No ordinal placed twice: between two placements of an ordinal it was torn down (gone), and the network holds
        // each fixed address for one attachment only.
        let events = try survivor.request("GET", "/v1/events?since=0&limit=10000").1["events"]?.array ?? []
        var live: [Int: Bool] = [:]
        for e in events where e["subject"]?.string?.hasPrefix("StatefulApp/db/") ?? false {
            guard let o = e["data"]?["ordinal"]?.int else { continue }
            switch e["type"]?.string {
            case "instance.placed":
                XCTAssertFalse(live[o] ?? false, "db-\(o) placed again while placed: \(e.serialized)")
                live[o] = true
            case "instance.gone": live[o] = false
            default: break
            }
        }
        XCTAssertEqual(live.keys.sorted(), [0, 1, 2, 3])
        let attachments = try survivor.request("GET", "/v1/networks/vlan/attachments").1["attachments"]?.array ?? []
        let addresses = attachments.flatMap { ($0["result"]?["ips"]?.array ?? []).compactMap { $0["address"]?.string } }
        XCTAssertEqual(addresses.count, Set(addresses).count, "no address held twice: \(addresses)")
        XCTAssertEqual(attachments.count, 4, attachments.map(\.serialized).joined(separator: "\n"))
        for d in ds { _ = try d.request("DELETE", "/v1/kinds/StatefulApp/db") }
        _ = try waitFor("db gone", { try survivor.request("GET", "/v1/instances").1 }) { ($0["instances"]?.array ?? [1]).isEmpty }
    }

    /// A reader waiting for events on one berthd is woken by an event another berthd commits (etcd's watch), at once,
    /// not at the end of its wait; every berthd lists the same events with the same revisions.
    func testAnEventOnOneBerthdWakesAReaderWaitingOnAnother() throws {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let store: JSON = ["engine": "etcd", "endpoints": [.string(etcd.endpoint)], "leaseSeconds": 2]
        let a = try Daemon(plugins: [], tag: "cluster-wa", extra: [("site", "watch"), ("node", "wa"), ("store", store)])
        let b = try Daemon(plugins: [], tag: "cluster-wb", extra: [("site", "watch"), ("node", "wb"), ("store", store)])
        _ = try waitFor("both members live", { try cluster(b) }) { ($0["members"]?.array ?? []).filter { $0["live"]?.bool == true }.count == 2 }
        usleep(500_000)  // the joins' own events are in
        let head = try b.request("GET", "/v1/events?since=0&limit=10000").1["events"]?.array?.last?["rev"]?.int ?? 0
        let woke = Shared<(Double, JSON)?>(nil)
        let reader = Thread {
            let t0 = Date()
            let r = try? b.request("GET", "/v1/events?since=\(head)&wait=20")
            woke.with { $0 = (Date().timeIntervalSince(t0), r?.1 ?? .null) }
        }
        reader.start()
        usleep(300_000)  // the reader is waiting
        let sent = Date()
        let (st, _) = try a.request("PUT", "/v1/nodes/extra-1", ["capacity": ["cpu": "1"]])
        XCTAssertEqual(st, 201)
        _ = try waitFor("the reader on b woke", timeout: 10, { woke.with { $0 }?.1 ?? .null }) { !$0.isNull }
        let (waited, body) = woke.with { $0 }!
        let latency = Date().timeIntervalSince(sent)
        print("an event committed on berthd a woke a reader waiting on berthd b after \(String(format: "%.0f", latency * 1000)) ms (it waited \(String(format: "%.2f", waited)) s of its 20)")
        XCTAssertLessThan(waited, 5, "woken by the event, not by the end of its wait")
        XCTAssertTrue((body["events"]?.array ?? []).contains { $0["type"]?.string == "node.added" && $0["subject"]?.string == "extra-1" }, body.serialized)
        let all = { (d: Daemon) in try d.request("GET", "/v1/events?since=0&limit=10000").1["events"]?.array?.map { "\($0["rev"]?.int ?? 0) \($0["type"]?.string ?? "")" } ?? [] }
        XCTAssertEqual(try all(a), try all(b), "the same log on every berthd")
    }

    /// A berthd stopped gracefully and started again within its lease's TTL (an upgrade): its node never goes down and
    /// what is placed on it stays there; the leadership moved at once when it stepped down.
    func testARestartWithinTheLeaseMovesNothing() throws {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let (a, b) = try pair(etcd, site: "restart")
        _ = try waitFor("a leads", { try cluster(b) }) { $0["leader"]?.string == "ra" && ($0["members"]?.array ?? []).count == 2 }
        _ = try waitFor("both nodes up", { try b.request("GET", "/v1/nodes").1 }) {
            ($0["nodes"]?.array ?? []).filter { $0["state"]?.string == "up" }.count == 2
        }
        let (st, body) = try b.request("PUT", "/v1/kinds/App/web", ["spec": ["replicas": 4, "resources": ["cpu": "100m"], "network": ["name": "vlan"]]])
        XCTAssertEqual(st, 201, body.serialized)
        let before = try waitFor("4 placed", { try b.request("GET", "/v1/instances").1 }) {
            ($0["instances"]?.array ?? []).filter { $0["state"]?.string == "placed" }.count == 4
        }
        let placed = (before["instances"]?.array ?? []).map { "\($0["name"]?.string ?? "") \($0["node"]?.string ?? "") \($0["incarnation"]?.int ?? 0)" }
        XCTAssertTrue(placed.contains { $0.contains(" ra ") }, "some on ra: \(placed)")
        a.stop()  // SIGTERM: a graceful stop
        let moved = try waitFor("b leads at once", timeout: 2, { try cluster(b) }) { $0["leader"]?.string == "rb" }
        XCTAssertEqual(moved["leader"]?.string, "rb")
        try a.start()
        sleep(UInt32(Self.lease + 2))  // past the old lease's TTL
        XCTAssertEqual(try b.request("GET", "/v1/nodes/ra").1["state"]?.string, "up", "the node was never missed")
        let after = try b.request("GET", "/v1/instances").1
        XCTAssertEqual((after["instances"]?.array ?? []).map { "\($0["name"]?.string ?? "") \($0["node"]?.string ?? "") \($0["incarnation"]?.int ?? 0)" },
                       placed, "nothing moved or was placed again")
        let events = try b.request("GET", "/v1/events?since=0&limit=10000&type=node").1["events"]?.array ?? []
        XCTAssertFalse(events.contains { $0["type"]?.string == "node.down" }, events.map(\.serialized).joined(separator: "\n"))
    }
    /// store.historySeconds: the scheduling leader compacts etcd's history, every that many seconds, to the revision it
    /// saw that many seconds before; the follower does not; `berth status` shows it; a berthd keeps working after it
    /// (its watches and the local copy resume above the compacted revision). Before, nothing compacted etcd's
    /// history: every version of every key stayed until etcd's database was full.
    func testTheLeaderCompactsEtcdsHistory() throws {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        // A longer lease than the other cases: the leader must stay the leader throughout, even on a loaded machine.
        let (a, b) = try pair(etcd, site: "history", store: [("leaseSeconds", 15), ("historySeconds", 1)])
        _ = try waitFor("a leads", { try cluster(b) }) { $0["leader"]?.string == "ha" && ($0["members"]?.array ?? []).count == 2 }
        for i in 0..<5 {
            let (st, body) = try b.request("POST", "/v1/networks/vlan/attachments", ["containerID": .string("h\(i)"), "ifname": "eth0", "node": "hb"])
            XCTAssertEqual(st, 200, body.serialized)
        }
        let raw = UnixHTTPConnection(endpoint: .tcp(host: "127.0.0.1", port: etcd.clientPort), timeoutSeconds: 5)
        func revision() throws -> Int {  // the gateway writes int64 as a string
            let r = try raw.request("POST", "/v3/kv/range", body: Array(#"{"key":"AA=="}"#.utf8)).json()["header"]?["revision"]
            return r?.string.flatMap { Int($0) } ?? r?.int ?? 0
        }
        let written = try revision()
        let shown = try waitFor("a compacted past the attachments", timeout: 10, { try cluster(a) }) {
            ($0["history"]?["compactedThrough"]?.int ?? 0) >= written
        }
        XCTAssertEqual(shown["history"]?["seconds"]?.int, 1)
        XCTAssertEqual(try cluster(b)["history"]?["compactedThrough"], .null, "the follower does not compact")
        let old = try raw.request("POST", "/v3/kv/range", body: Array(#"{"key":"AA==","revision":"2"}"#.utf8))
        XCTAssertTrue(old.text.contains("compacted"), "revision 2 is compacted away: \(old.text)")
        // Both keep allocating, on either berthd.
        for (i, d) in [a, b].enumerated() {
            let (st, body) = try d.request("POST", "/v1/networks/vlan/attachments", ["containerID": .string("after\(i)"), "ifname": "eth0", "node": "hb"])
            XCTAssertEqual(st, 200, body.serialized)
        }
        XCTAssertEqual(try b.request("GET", "/v1/networks/vlan/attachments").1["attachments"]?.array?.count, 7)
        XCTAssertEqual(try cluster(b)["leader"]?.string, "ha", "a led throughout")
    }
    /// A node removed for good (DELETE /v1/nodes/NAME, `berth nodes rm`) once its berthd is gone is no longer a member
    /// of the site: the leader forgets it in etcd (members/), and `berth status` stops listing it. Before, it stayed a
    /// member for ever (listed with live false). Its berthd, started again, is a member again.
    func testARemovedNodeIsNoLongerAMember() throws {
        let etcd = try EtcdProcess()
        defer { etcd.stop() }
        let (a, b) = try pair(etcd, site: "members")
        func members() throws -> [String] { (try cluster(a)["members"]?.array ?? []).compactMap { $0["node"]?.string }.sorted() }
        _ = try waitFor("a leads, 2 members", { try cluster(a) }) { $0["leader"]?.string == "ma" && ($0["members"]?.array ?? []).count == 2 }
        b.stop()
        _ = try waitFor("mb down", timeout: 20, { try a.request("GET", "/v1/nodes/mb").1 }) { $0["state"]?.string == "down" }
        XCTAssertEqual(try members(), ["ma", "mb"], "a node that is down is still a member")
        let (st, body) = try a.request("DELETE", "/v1/nodes/mb")
        XCTAssertEqual(st, 200, body.serialized)
        _ = try waitFor("mb no longer a member", timeout: 10, { .array(try members().map { .string($0) }) }) { $0 == ["ma"] }
        try b.start()
        _ = try waitFor("mb a member again", timeout: 20, { .array(try members().map { .string($0) }) }) { $0 == ["ma", "mb"] }
    }
}
