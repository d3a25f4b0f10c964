// Issue 18, first must-show: 3 berthd on a 3-member etcd (all on loopback) allocate at once through their APIs and
// through berth-cni while one berthd and then the etcd leader are kill -9'd and restarted; every acknowledged
// allocation is present with its address on every berthd, no address is held twice, and the pool matches the records.
import BerthWire
import Foundation
import XCTest

/// How a worker allocates: berthd's HTTP API, or the real berth-cni binary (CNI_COMMAND=ADD).
private enum AllocPath: String, CaseIterable { case api, cni }

/// One acknowledged allocation: the address answered, the berthd (node index) and path it went through, the phase.
private struct Ack { let address: String; let node: Int; let path: AllocPath; let phase: String }

/// What the workers saw, shared between their threads.
private struct Tally {
    var acked: [String: Ack] = [:]          // containerID -> its acknowledged allocation
    var errors: [String: Int] = [:]         // "phase | what failed" -> attempts
    var samples: [String: String] = [:]     // "what failed" -> one answer of that kind, for the report
    var ackedAfterFailure = 0               // containers acknowledged after one or more failed attempts (same id asked again)
    var abandoned: Set<String> = []         // containers never acknowledged (the run ended first)
}

final class ClusterChaosTests: XCTestCase {
    static let network = "net", pool = "p"
    private let tally = Shared(Tally())
    private let phase = Shared("steady")
    private let stopping = Shared<Date?>(nil)   // set: finish the container in hand (retrying until this deadline), then stop

    func testAllocationsSurviveKillingABerthdAndTheEtcdLeader() throws {
        let t0 = Date()
        let cluster = try EtcdCluster(members: 3)
        var daemons: [Daemon] = []
        defer { for d in daemons { d.stop() }; cluster.stop() }
        let plugins: JSON = [["name": .string(Self.network), "path": .string(Paths.plugin("ipam-pool")),
                              "config": ["pools": [["name": .string(Self.pool), "ranges": [["subnet": "10.200.0.0/16"]],
                                                    "blockSize": 26, "nodeCounters": true]]]]]
        let store: JSON = ["engine": "etcd", "endpoints": .array(cluster.endpoints.map { .string($0) }), "leaseSeconds": 3]
        for i in 0..<3 {
            daemons.append(try Daemon(plugins: plugins, tag: "chaos-n\(i)",
                                      extra: [("site", "chaos"), ("node", .string("n\(i)")), ("store", store)]))
        }
        try waitForMembers(daemons, live: 3, seconds: 15)
        print("cluster up in \(secs(t0)) s: etcd \(cluster.endpoints), berthd n0 n1 n2")

        let workers = startWorkers(daemons)
        defer {  // on any way out, the workers stop (at once: their next failure abandons the container in hand)
            stopping.with { if $0 == nil { $0 = Date() } }
            workers.wait()
        }
        let run0 = Date()
        try waitForAcks(500, seconds: 60)

        // 1. kill -9 the berthd that leads the scheduling; restart it after its lease (3 s) lapsed.
        let victim = try leaderIndex(daemons)
        phase.with { $0 = "berthd n\(victim) killed" }
        let killedAt = tally.get.acked.count
        daemons[victim].kill9()
        sleep(5)
        phase.with { $0 = "berthd n\(victim) restarting" }
        let restartAt = Date()
        try daemons[victim].start()
        print("berthd n\(victim) (the scheduling leader) killed at \(killedAt) acks, answering again \(secs(restartAt)) s after its restart began")
        phase.with { $0 = "after berthd restart" }
        try waitForMembers(daemons, live: 3, seconds: 15)
        try waitForAcks(tally.get.acked.count + 500, seconds: 60)

        // 2. kill -9 the etcd leader; restart it on its data directory.
        let member = try XCTUnwrap(cluster.leader(), "no etcd member says who leads")
        phase.with { $0 = "etcd m\(member) killed" }
        let etcdKilledAt = tally.get.acked.count
        cluster.kill(member)
        sleep(4)
        try cluster.restart(member)
        print("etcd m\(member) (the raft leader) killed at \(etcdKilledAt) acks, restarted; new leader m\(cluster.leader().map(String.init) ?? "?")")
        phase.with { $0 = "after etcd restart" }
        try waitForAcks(max(2_200, tally.get.acked.count + 400), seconds: 90)

        stopping.with { $0 = Date().addingTimeInterval(30) }
        workers.wait()
        let runSeconds = Date().timeIntervalSince(run0)
        report(daemons, runSeconds: runSeconds)
        // Every failure says "try again": no answer (berthd killed), 503 (etcd out of reach, outcome unknown), 409 after
        // conflicts, berth-cni's code 11. Not 500 (INTERNAL) nor a refusal of the ADD itself.
        let kinds = Set(tally.get.samples.keys)  // every kind of failure seen, with one answer of that kind
        XCTAssertEqual(kinds.subtracting(["no answer", "HTTP 503", "HTTP 409 aborted", "berth-cni exit 11"]), [], "failures that are not \"try again\": \(tally.get.samples)")
        try verify(daemons)
        print("whole test \(secs(t0)) s")
    }

    // MARK: workers

    /// Per berthd: two API workers and one berth-cni worker, each allocating containers of its own one after another.
    private func startWorkers(_ daemons: [Daemon]) -> DispatchGroup {
        let group = DispatchGroup()
        for (i, d) in daemons.enumerated() {
            for (w, path) in [(0, AllocPath.api), (1, .api), (2, .cni)] {
                group.enter()
                let t = Thread { [self] in worker(d, node: i, path: path, w: w); group.leave() }
                t.name = "chaos-n\(i)-\(path)-\(w)"
                t.start()
            }
        }
        return group
    }

    /// Asks for one container until it is acknowledged (the same container ID again after a failure: an ADD is
    /// idempotent per container and interface, so a commit whose answer was lost gives that same address), then the next.
    private func worker(_ d: Daemon, node: Int, path: AllocPath, w: Int) {
        var conn: UnixHTTPConnection?
        var seq = 0
        while stopping.get == nil {
            seq += 1
            let cid = "\(path)-n\(node)-w\(w)-\(seq)"
            var failures = 0
            while true {
                let outcome = path == .api ? addThroughAPI(d, node: node, cid: cid, conn: &conn) : addThroughCNI(d, cid: cid)
                let now = phase.get
                switch outcome {
                case .success(let address):
                    tally.with {
                        $0.acked[cid] = Ack(address: address, node: node, path: path, phase: now)
                        if failures > 0 { $0.ackedAfterFailure += 1 }
                    }
                case .failure(let e):
                    failures += 1
                    tally.with {
                        $0.errors["\(now) | \(path) \(e.kind)", default: 0] += 1
                        if $0.samples[e.kind] == nil { $0.samples[e.kind] = e.sample }
                    }
                    if let deadline = stopping.get, Date() > deadline {
                        tally.with { _ = $0.abandoned.insert(cid) }
                    } else {
                        usleep(100_000)
                        continue
                    }
                }
                break
            }
        }
        conn?.close()
    }

    private struct AddFailure: Error { let kind: String; let sample: String }

    private func addThroughAPI(_ d: Daemon, node: Int, cid: String, conn: inout UnixHTTPConnection?) -> Result<String, AddFailure> {
        let body: JSON = ["containerID": .string(cid), "ifname": "eth0", "node": .string("n\(node)")]
        let c = conn ?? UnixHTTPConnection(path: d.socket, timeoutSeconds: 20)
        conn = c
        do {
            let r = try c.request("POST", "/v1/networks/\(Self.network)/attachments", body: body.bytes)
            let j = try? r.json()
            if (200..<300).contains(r.status), let a = j?["ips"]?[0]?["address"]?.string, j?["ips"]?.array?.count == 1 { return .success(a) }
            let aborted = r.status == 409 && (j?["error"]?.string ?? "").contains("conflicted with concurrent changes")
            return .failure(AddFailure(kind: "HTTP \(r.status)\(aborted ? " aborted" : "")", sample: String(r.text.prefix(300))))
        } catch {
            c.close()
            conn = nil
            return .failure(AddFailure(kind: "no answer", sample: "\(error)"))
        }
    }

    private func addThroughCNI(_ d: Daemon, cid: String) -> Result<String, AddFailure> {
        let conf: JSON = ["cniVersion": "1.0.0", "name": "chaos", "type": "berth-cni",
                          "ipam": ["type": "berth-cni", "socket": .string(d.socket), "network": .string(Self.network)]]
        let env = ["CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid, "CNI_NETNS": "/var/run/netns/\(cid)", "CNI_IFNAME": "eth0",
                   "CNI_PATH": "/usr/lib/cni", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"]
        do {
            let (rc, out, err) = try runTool(Paths.bin + "/berth-cni", [], env: env, stdin: conf.serialized)
            let j = try? JSON.parse(out)
            if rc == 0, let a = j?["ips"]?[0]?["address"]?.string, j?["ips"]?.array?.count == 1 { return .success(a) }
            return .failure(AddFailure(kind: "berth-cni exit \(rc)", sample: String((out + err).prefix(300))))
        } catch {
            return .failure(AddFailure(kind: "berth-cni not run", sample: "\(error)"))
        }
    }

    // MARK: the run

    private func secs(_ since: Date) -> String { String(format: "%.1f", Date().timeIntervalSince(since)) }

    /// Waits until `n` allocations are acknowledged; throws (with the figures) when that takes longer than `seconds`.
    private func waitForAcks(_ n: Int, seconds: Double) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while tally.get.acked.count < n {
            guard Date() < deadline else {
                stopping.with { $0 = Date() }
                let t = tally.get
                throw BerthError(.unavailable, "only \(t.acked.count) of \(n) allocations acknowledged within \(Int(seconds)) s (phase \(phase.get)); errors: \(t.errors); samples: \(t.samples)")
            }
            usleep(200_000)
        }
    }

    /// The cluster status of berthd `d` (GET /healthz, store.cluster).
    private func clusterStatus(_ d: Daemon) -> JSON? {
        guard let (st, h) = try? d.request("GET", "/healthz"), st == 200 else { return nil }
        return h["store"]?["cluster"]
    }

    /// Waits until every berthd sees `live` live members and the same leader.
    private func waitForMembers(_ daemons: [Daemon], live: Int, seconds: Double) throws {
        let deadline = Date().addingTimeInterval(seconds)
        var last: [JSON?] = []
        while Date() < deadline {
            last = daemons.map { clusterStatus($0) }
            let leaders = Set(last.map { $0?["leader"]?.string ?? "" })
            let lives = last.map { ($0?["members"]?.array ?? []).filter { $0["live"]?.bool == true }.count }
            if leaders.count == 1, !leaders.contains(""), lives.allSatisfy({ $0 == live }) { return }
            usleep(200_000)
        }
        throw BerthError(.unavailable, "the berthds did not agree on \(live) live members and one leader within \(Int(seconds)) s: \(last.map { $0?.serialized ?? "no answer" })")
    }

    private func leaderIndex(_ daemons: [Daemon]) throws -> Int {
        let leader = try XCTUnwrap(clusterStatus(daemons[0])?["leader"]?.string, "berthd n0 names no scheduling leader")
        return try XCTUnwrap(Int(leader.dropFirst()), "leader \(leader) is not one of n0 n1 n2")
    }

    // MARK: figures and checks

    /// Prints the figures: acknowledged allocations per berthd and path and per phase, failed attempts, conflicts.
    private func report(_ daemons: [Daemon], runSeconds: Double) {
        let t = tally.get
        print(String(format: "%d allocations acknowledged in %.1f s (%.0f/s), %d after a failed attempt, %d abandoned at the end",
                     t.acked.count, runSeconds, Double(t.acked.count) / runSeconds, t.ackedAfterFailure, t.abandoned.count))
        for i in daemons.indices {
            let per = AllocPath.allCases.map { p in "\(p) \(t.acked.values.filter { $0.node == i && $0.path == p }.count)" }
            print("  berthd n\(i): \(per.joined(separator: ", "))")
        }
        for (ph, n) in Dictionary(grouping: t.acked.values, by: \.phase).mapValues(\.count).sorted(by: { $0.key < $1.key }) {
            print("  acknowledged while \(ph): \(n)")
        }
        for (k, n) in t.errors.sorted(by: { $0.key < $1.key }) { print("  failed attempts, \(k): \(n)") }
        for (k, s) in t.samples.sorted(by: { $0.key < $1.key }) { print("  e.g. \(k): \(s)") }
        for (i, d) in daemons.enumerated() {
            let metrics = (try? UnixHTTPConnection(path: d.socket).request("GET", "/metrics").text) ?? ""
            let line = metrics.split(separator: "\n").first { $0.hasPrefix("berth_store_conflicts_total ") } ?? "berth_store_conflicts_total ?"
            let commits = metrics.split(separator: "\n").first { $0.hasPrefix("berth_store_commits_total ") } ?? "berth_store_commits_total ?"
            print("  berthd n\(i) (since its last start): \(line), \(commits)")
        }
    }

    /// Every berthd lists the same attachments; each acknowledged container is there with its address and node; no
    /// address is held twice; nothing is listed that was not acknowledged (bar containers abandoned at the end); the
    /// pool's active addresses are exactly the attachments' (same container, same address), and so are its counts and
    /// the network.attached events.
    private func verify(_ daemons: [Daemon]) throws {
        let t = tally.get
        var lists: [[String: (address: String, node: String)]] = []
        for (i, d) in daemons.enumerated() {
            let (st, r) = try d.request("GET", "/v1/networks/\(Self.network)/attachments")
            XCTAssertEqual(st, 200, "berthd n\(i): \(r.serialized.prefix(300))")
            var m: [String: (address: String, node: String)] = [:]
            for a in r["attachments"]?.array ?? [] {
                let cid = a["containerID"]?.string ?? "?"
                XCTAssertEqual(a["result"]?["ips"]?.array?.count, 1, "berthd n\(i): attachment \(cid) has one address: \(a.serialized)")
                XCTAssertNil(m[cid], "berthd n\(i) lists \(cid) twice")
                m[cid] = (a["result"]?["ips"]?[0]?["address"]?.string ?? "", a["node"]?.string ?? "")
            }
            lists.append(m)
        }
        let list = lists[0]
        for i in 1..<lists.count {
            XCTAssertEqual(lists[i].mapValues { "\($0.address) \($0.node)" }, list.mapValues { "\($0.address) \($0.node)" }, "berthd n\(i) lists what n0 lists")
        }
        XCTAssertGreaterThanOrEqual(t.acked.count, 2_000)
        var missing: [String] = [], moved: [String] = []
        for (cid, ack) in t.acked {
            guard let got = list[cid] else { missing.append(cid); continue }
            if got.address != ack.address || got.node != "n\(ack.node)" { moved.append("\(cid): acknowledged \(ack.address) on n\(ack.node), listed \(got.address) on \(got.node)") }
        }
        XCTAssertEqual(missing.count, 0, "acknowledged but not listed: \(missing.sorted().prefix(20))")
        XCTAssertEqual(moved.count, 0, "listed with another address or node: \(moved.prefix(20))")
        let extra = list.keys.filter { t.acked[$0] == nil && !t.abandoned.contains($0) }
        XCTAssertEqual(extra.count, 0, "listed but never acknowledged nor abandoned: \(extra.sorted().prefix(20))")
        let byAddress = Dictionary(grouping: list, by: { $0.value.address }).filter { $0.value.count > 1 }
        XCTAssertEqual(byAddress.count, 0, "addresses held twice: \(byAddress.mapValues { $0.map(\.key) }.prefix(20))")
        try verifyPool(daemons, list: list.mapValues(\.address))
    }

    /// The plugin's state against the attachment records: the pool's active addresses (pool.show) are the attachments'
    /// (same container, same address), the active counts (pool and capacity) equal their number, and each attachment
    /// has exactly one network.attached event, seen alike through every berthd.
    private func verifyPool(_ daemons: [Daemon], list: [String: String]) throws {
        let (st, shown) = try daemons[0].request("GET", "/v1/networks/\(Self.network)/pools/\(Self.pool)")
        XCTAssertEqual(st, 200, shown.serialized.prefix(300).description)
        var active: [String: String] = [:]
        for a in shown["addresses"]?.array ?? [] where a["state"]?.string == "active" {
            let cid = a["containerID"]?.string ?? "?"
            XCTAssertNil(active[cid], "the pool holds two addresses for \(cid)")
            active[cid] = a["address"]?.string ?? ""
        }
        let recorded = list.mapValues { String($0.split(separator: "/").first ?? "") }
        XCTAssertEqual(active.count, recorded.count, "active addresses in the pool vs attachments")
        let mismatched = recorded.filter { active[$0.key] != $0.value }.map { "\($0.key): record \($0.value), pool \(active[$0.key] ?? "none")" }
        XCTAssertEqual(mismatched.count, 0, "attachments without their address in the pool: \(mismatched.sorted().prefix(20))")
        let orphans = active.keys.filter { recorded[$0] == nil }
        XCTAssertEqual(orphans.count, 0, "pool addresses without an attachment: \(orphans.sorted().prefix(20))")
        XCTAssertEqual(shown["counts"]?["active"]?.int, list.count, "pool.show counts: \(shown["counts"]?.serialized ?? "none")")
        for (i, d) in daemons.enumerated() {
            let cap = try d.request("GET", "/v1/networks/\(Self.network)/capacity").1
            XCTAssertEqual(cap["active"]?.int, list.count, "berthd n\(i) capacity: \(cap.serialized.prefix(300))")
            let evs = try d.request("GET", "/v1/events?since=0&limit=10000&type=network.attached").1["events"]?.array ?? []
            let subjects = Dictionary(grouping: evs.compactMap { $0["subject"]?.string }, by: { $0 }).mapValues(\.count)
            let expected = Dictionary(uniqueKeysWithValues: list.keys.map { ("\(Self.network)/\($0)/eth0", 1) })
            let wrong = expected.keys.filter { subjects[$0] != 1 } + subjects.keys.filter { expected[$0] == nil }
            XCTAssertEqual(wrong.count, 0, "berthd n\(i): one network.attached event per attachment (\(evs.count) events, \(list.count) attachments); wrong: \(wrong.sorted().prefix(20).map { "\($0) x\(subjects[$0] ?? 0)" })")
        }
        print("verified: \(list.count) attachments alike on 3 berthd, \(active.count) active addresses in pool \(Self.pool), all distinct")
    }
}
