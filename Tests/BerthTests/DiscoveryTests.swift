// Service discovery: durable event delivery to discovery plugins, the discovery-dns plugin feeding a REAL dnsmasq
// (answers checked with dig), kill -9 with events pending, a plugin that fails every other call, `berth events
// --watch`, and the discovery conformance cases of `berth plugin check`.
//
// Instance events are synthetic here: they are appended to the daemon's store the way the workload service does
// (type instance.<state>, subject <kind>/<app>/<ordinal>, data {kind, app, ordinal, node, state, ips}), from the
// test process, which shares berthd's SQLite store (WAL) — or through `runtime.record` for the in-process runtime.
@testable import BerthCheck
@testable import BerthKinds
@testable import BerthPlugins
@testable import BerthScheduler
@testable import BerthStore
@testable import BerthCore
import BerthWire
import Foundation
import XCTest

// MARK: - helpers

enum Tools {
    static func find(_ name: String) -> String? {
        for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"] where access("\(dir)/\(name)", X_OK) == 0 {
            return "\(dir)/\(name)"
        }
        return nil
    }

    /// dnsmasq and dig, or a skip that says what to install.
    static func dns() throws -> (dnsmasq: String, dig: String) {
        guard let d = find("dnsmasq"), let g = find("dig") else {
            throw XCTSkip("needs dnsmasq and dig: apt-get install dnsmasq-base bind9-dnsutils (CI installs them via .ci/run)")
        }
        return (d, g)
    }
}

/// A real dnsmasq on 127.0.0.1 and a free port, serving only the plugin's hosts file. It runs daemonised (its
/// parent exits once it listens, with an error status when it cannot) and is stopped by the pid in its pid file:
/// dnsmasq closes inherited descriptors at start-up, which Foundation's Process would take for an exit.
final class DNSMasq {
    let port: Int
    let pidFile: String
    let dig: String
    let domain: String

    init(hostsFile: String, pidFile: String, domain: String, dir: String) throws {
        let (exe, dig) = try Tools.dns()
        self.dig = dig
        self.pidFile = pidFile
        self.domain = domain
        if !FileManager.default.fileExists(atPath: hostsFile) { _ = FileManager.default.createFile(atPath: hostsFile, contents: nil) }
        chmod(hostsFile, 0o644)
        var lastError = ""
        for _ in 0..<20 {
            let port = Int.random(in: 20000..<60000)
            let (rc, out, err) = try runTool(exe, ["--no-resolv", "--no-hosts", "--addn-hosts=\(hostsFile)", "--pid-file=\(pidFile)",
                                                   "--listen-address=127.0.0.1", "--bind-interfaces", "--port=\(port)", "--local=/\(domain)/",
                                                   "--log-facility=\(dir)/dnsmasq.log"])
            if rc == 0 {
                self.port = port
                return
            }
            lastError = out + err  // the port was taken: try another
        }
        throw NSError(domain: "berth", code: 2, userInfo: [NSLocalizedDescriptionKey: "dnsmasq did not start: \(lastError)"])
    }

    var pid: Int32 {
        Int32(((try? String(contentsOfFile: pidFile, encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    /// Sorted answers of `dig @127.0.0.1 -p PORT name +short` (A records).
    func lookup(_ name: String) -> [String] {
        guard let r = try? runTool(dig, ["@127.0.0.1", "-p", "\(port)", name, "A", "+short", "+time=1", "+tries=2"]), r.0 == 0 else { return ["<dig failed>"] }
        return r.1.split(separator: "\n").map(String.init).filter { !$0.isEmpty }.sorted()
    }

    func stop() {
        let p = pid
        guard p > 1 else { return }
        kill(p, SIGTERM)
        for _ in 0..<100 where kill(p, 0) == 0 { usleep(20_000) }
        unlink(pidFile)
    }

    deinit { stop() }
}

/// Polls until `cond` holds or the timeout passes; returns whether it held.
@discardableResult
func eventually(_ timeout: Double = 20, _ cond: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try cond() { return true }
        usleep(50_000)
    }
    return try cond()
}

/// What the workload service would record: instance transitions, and the set of running instances they imply.
struct PlatformModel {
    struct Inst: Hashable { let app: String; let ordinal: Int; let ip: String }
    var running: [String: Inst] = [:]
    var events: [(type: String, subject: String, data: JSON)] = []

    static func data(_ app: String, _ ord: Int, _ state: String, _ ip: String) -> JSON {
        ["kind": "App", "app": .string(app), "ordinal": .number(Double(ord)), "node": "node-1", "state": .string(state), "ips": [.string(ip)]]
    }

    mutating func transition(_ app: String, _ ord: Int, _ ip: String, _ states: [String]) {
        for s in states {
            events.append(("instance.\(s)", "App/\(app)/\(ord)", Self.data(app, ord, s, ip)))
            if s == "running" { running["\(app)/\(ord)"] = Inst(app: app, ordinal: ord, ip: ip) } else { running.removeValue(forKey: "\(app)/\(ord)") }
        }
    }

    mutating func start(_ app: String, _ ord: Int, _ ip: String) { transition(app, ord, ip, ["pending", "placed", "running"]) }
    mutating func stop(_ app: String, _ ord: Int, _ ip: String) { transition(app, ord, ip, ["terminating", "gone"]) }

    /// Takes the events recorded so far.
    mutating func drain() -> [(type: String, subject: String, data: JSON)] {
        defer { events.removeAll() }
        return events
    }

    /// The hosts lines discovery-dns must write for the running instances (sorted).
    func hostsLines(site: String, domain: String) -> [String] {
        running.values.flatMap { i in ["\(i.ip) \(i.app)-\(i.ordinal).\(i.app).\(site).\(domain)", "\(i.ip) \(i.app).\(site).\(domain)"] }.sorted()
    }

    /// app -> sorted file_sd targets.
    func targets(port: Int = 9100) -> [String: [String]] {
        var out: [String: [String]] = [:]
        for i in running.values { out[i.app, default: []].append("\(i.ip):\(port)") }
        return out.mapValues { $0.sorted() }
    }
}

/// Appends events to a daemon's store from the test process (SQLite WAL: berthd sees them at its next read).
final class EventInjector {
    let store: Store
    init(stateDir: String) throws { store = try Store(path: stateDir + "/state.db", synchronous: "normal") }

    @discardableResult
    func append(_ evs: [(type: String, subject: String, data: JSON)]) throws -> Int64 {
        try store.begin()
        var last: Int64 = 0
        do {
            for e in evs { last = try store.appendEvent(type: e.type, subject: e.subject, actor: "test:workloads", data: e.data) }
            try store.commit()
        } catch {
            store.rollback()
            throw error
        }
        return last
    }

    func cursor(_ plugin: String) throws -> Int64? {
        let s = try store.prepare("SELECT rev FROM discovery_cursors WHERE plugin=?1")
        s.bind(1, plugin)
        return try s.step() ? s.int(0) : nil
    }

    func lastRev() throws -> Int64 { try store.lastRevision() }
}

func hostsLines(_ path: String) -> [String] {
    ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") }.sorted()
}

func fileSdTargets(_ path: String) -> [String: [String]]? {
    guard let d = FileManager.default.contents(atPath: path), let j = try? JSON.parse(Array(d)), let groups = j.array else { return nil }
    var out: [String: [String]] = [:]
    for g in groups {
        guard let app = g["labels"]?["app"]?.string else { return nil }
        out[app, default: []] += (g["targets"]?.array ?? []).compactMap { $0.string }
    }
    return out.mapValues { $0.sorted() }
}

/// Drives the platform for the discovery tests: real apps through the workload service's API (`berth apply`:
/// PUT /v1/kinds/App/NAME, then the runtime's report POST .../running) when berthd has it; otherwise synthetic
/// instance events appended to berthd's store. The expected state is what the platform says is running.
final class Platform {
    let d: Daemon
    let real: Bool
    let inj: EventInjector
    private(set) var model = PlatformModel()
    private let lock = NSLock()
    private var nextIP = 0

    /// The network plugin the real apps use (add it to the daemon's plugins).
    static func network(_ dir: String) -> JSON {
        ["name": "net1", "path": .string(Paths.plugin("ipam-pool")),
         "config": ["defaultPool": "p1", "pools": [["name": "p1", "ranges": [["subnet": "10.1.0.0/16"]]]]]]
    }

    init(_ d: Daemon) throws {
        self.d = d
        inj = try EventInjector(stateDir: d.dir + "/state")
        real = ((try? d.request("GET", "/v1/nodes"))?.0 ?? 404) == 200
        if real {
            let (st, body) = try d.request("PUT", "/v1/nodes/node-1", ["capacity": ["cpu": "512", "memory": "4Ti", "disk": "100Ti", "ports": 60000]])
            guard st == 200 || st == 201 else { throw FixtureError(description: "PUT node: \(st) \(body.serialized)") }
        }
        print("discovery tests: instances from \(real ? "the workload service (real apps)" : "synthetic instance events (no workload service in this build)")")
    }

    /// Sets an app's replicas. Real: applies the App, waits until its instances are placed, reports them running.
    func scale(_ app: String, _ replicas: Int) throws {
        if real {
            if replicas == 0 {
                let (st, body) = try d.request("DELETE", "/v1/kinds/App/\(app)")
                guard st == 200 || st == 404 else { throw FixtureError(description: "DELETE \(app): \(st) \(body.serialized)") }
            } else {
                let spec: JSON = ["replicas": .number(Double(replicas)), "resources": ["cpu": "10m", "memory": "1Mi"], "network": ["name": "net1"]]
                let (st, body) = try d.request("PUT", "/v1/kinds/App/\(app)", ["kind": "App", "name": .string(app), "spec": spec])
                guard st == 200 || st == 201 else { throw FixtureError(description: "PUT App \(app): \(st) \(body.serialized)") }
            }
            var placed: [Int] = []
            let settled = try eventually(20) {
                let (_, body) = try d.request("GET", "/v1/instances?kind=App&app=\(app)")
                let list = body["instances"]?.array ?? []
                let states = list.compactMap { $0["state"]?.string }
                placed = list.filter { $0["state"] == "placed" }.compactMap { $0["ordinal"]?.int }
                return list.count == replicas && states.allSatisfy { $0 == "placed" || $0 == "running" }
            }
            guard settled else { throw FixtureError(description: "app \(app) did not settle at \(replicas) placed instance(s)") }
            for o in placed {
                let (st, body) = try d.request("POST", "/v1/instances/App/\(app)/\(o)/running")
                guard st == 200 else { throw FixtureError(description: "report \(app)-\(o) running: \(st) \(body.serialized)") }
            }
        } else {
            try lock.withLock {
                for o in 0..<max(replicas, 0) where model.running["\(app)/\(o)"] == nil {
                    nextIP += 1
                    model.start(app, o, "10.1.\(nextIP / 250).\(1 + nextIP % 250)")
                }
                for (k, i) in model.running where i.app == app && i.ordinal >= replicas { _ = k; model.stop(app, i.ordinal, i.ip) }
                try inj.append(model.drain())
            }
        }
    }

    /// Real mode: applies an App and returns as soon as berthd committed it (its events are in the log), without
    /// waiting for placement.
    func applyNoWait(_ app: String, _ replicas: Int) throws {
        let spec: JSON = ["replicas": .number(Double(replicas)), "resources": ["cpu": "10m", "memory": "1Mi"], "network": ["name": "net1"]]
        let (st, body) = try d.request("PUT", "/v1/kinds/App/\(app)", ["kind": "App", "name": .string(app), "spec": spec])
        guard st == 200 || st == 201 else { throw FixtureError(description: "PUT App \(app): \(st) \(body.serialized)") }
    }

    /// The running instances as the platform reports them.
    func running() throws -> [PlatformModel.Inst] {
        if real {
            let (st, body) = try d.request("GET", "/v1/instances?state=running")
            guard st == 200 else { throw FixtureError(description: "GET instances: \(st)") }
            return (body["instances"]?.array ?? []).flatMap { i in
                (i["ips"]?.array ?? []).compactMap { $0.string }.map {
                    PlatformModel.Inst(app: i["app"]?.string ?? "", ordinal: i["ordinal"]?.int ?? -1, ip: $0)
                }
            }
        }
        return lock.withLock { Array(model.running.values) }
    }

    func hostsLines(site: String = "test", domain: String) throws -> [String] {
        try running().flatMap { i in ["\(i.ip) \(i.app)-\(i.ordinal).\(i.app).\(site).\(domain)", "\(i.ip) \(i.app).\(site).\(domain)"] }.sorted()
    }

    func targets(port: Int = 9100) throws -> [String: [String]] {
        var out: [String: [String]] = [:]
        for i in try running() { out[i.app, default: []].append("\(i.ip):\(port)") }
        return out.mapValues { $0.sorted() }
    }
}

// MARK: - tests

final class DiscoveryTests: XCTestCase {
    let domain = "berth.test"

    func dnsPlugin(_ name: String, _ dir: String, pidFile: String? = nil, debounceMs: Int = 50) -> JSON {
        var cfg: JSON = ["hostsFile": .string(dir + "/\(name).hosts"), "fileSdFile": .string(dir + "/\(name).file_sd.json"),
                         "domain": .string(domain), "debounceMs": .number(Double(debounceMs))]
        if let pidFile { cfg = cfg.setting("pidFile", .string(pidFile)) }
        return ["name": .string(name), "path": .string(Paths.plugin("discovery-dns")), "config": cfg]
    }

    /// An app with 3 running instances, scaled to 2, then deleted: a real dnsmasq (reloaded by SIGHUP) answers
    /// exactly the running instances at each step.
    func testDnsmasqAnswersRunningInstances() throws {
        _ = try Tools.dns()
        let dir = tempDir("discovery-dns")
        let hosts = dir + "/dns.hosts", pid = dir + "/dnsmasq.pid"
        let dns = try DNSMasq(hostsFile: hosts, pidFile: pid, domain: domain, dir: dir)
        let d = try Daemon(plugins: [Platform.network(dir), dnsPlugin("dns", dir, pidFile: pid)], tag: "disc-dns")
        let platform = try Platform(d)

        // An app with 3 running instances: each name answers its instance's address, the app name all three.
        try platform.scale("web", 3)
        let three = try platform.running().sorted { $0.ordinal < $1.ordinal }
        XCTAssertEqual(three.map { $0.ordinal }, [0, 1, 2])
        for i in three {
            XCTAssertTrue(eventually { dns.lookup("web-\(i.ordinal).web.test.\(domain)") == [i.ip] },
                          "web-\(i.ordinal): \(dns.lookup("web-\(i.ordinal).web.test.\(domain)")), want \(i.ip)\n\(d.log())")
        }
        XCTAssertEqual(dns.lookup("web.test.\(domain)"), three.map { $0.ip }.sorted())
        XCTAssertTrue(eventually { fileSdTargets(dir + "/dns.file_sd.json") == ["web": three.map { "\($0.ip):9100" }.sorted()] })
        let sd = try JSON.parse(Array(FileManager.default.contents(atPath: dir + "/dns.file_sd.json")!))
        XCTAssertEqual(sd[0]?["labels"]?["site"], "test")
        XCTAssertEqual(sd[0]?["labels"]?["app"], "web")

        // Scale to 2: the third name stops resolving, the app name answers two.
        try platform.scale("web", 2)
        XCTAssertTrue(eventually { dns.lookup("web-2.web.test.\(domain)").isEmpty }, "\(dns.lookup("web-2.web.test.\(domain)"))")
        XCTAssertEqual(dns.lookup("web.test.\(domain)"), three.prefix(2).map { $0.ip }.sorted())
        XCTAssertEqual(dns.lookup("web-1.web.test.\(domain)"), [three[1].ip])

        // Lag is visible (and back to 0) in the API, `berth plugins show` and /metrics.
        XCTAssertTrue(try eventually {
            let (_, p) = try d.request("GET", "/v1/plugins/dns")
            let last = Int(try inj(platform).lastRev())
            return p["discovery"]?["lag"] == 0 && p["discovery"]?["cursor"]?.int == last
        })
        let (rc, out, err) = try runTool(Paths.bin + "/berth", ["plugins", "show", "dns", "--socket", d.socket])
        XCTAssertEqual(rc, 0, err)
        XCTAssertTrue(out.contains("discovery:") && out.contains("\"lag\":0"), out)
        let metrics = try UnixHTTPConnection(path: d.socket).request("GET", "/metrics").text
        XCTAssertTrue(metrics.contains("berth_discovery_lag_events{plugin=\"dns\"} 0"), metrics)
        XCTAssertTrue(metrics.contains("berth_discovery_failures_total{plugin=\"dns\"} 0"), metrics)

        // Idempotent writes: a restart of berthd (a resync with the same state) rewrites nothing and sends no SIGHUP.
        func inode(_ path: String) -> UInt64 { ((try? FileManager.default.attributesOfItem(atPath: path))?[.systemFileNumber] as? NSNumber)?.uint64Value ?? 0 }
        func reloads() -> Int { ((try? String(contentsOfFile: dir + "/dnsmasq.log", encoding: .utf8)) ?? "").components(separatedBy: "read \(hosts)").count - 1 }
        let (ino, sdIno, before) = (inode(hosts), inode(dir + "/dns.file_sd.json"), reloads())
        d.stop()
        try d.start()
        XCTAssertTrue(eventually { (try? d.request("GET", "/v1/plugins/dns").1["discovery"]?["resyncs"]?.int) == 1 })
        usleep(500_000)  // well past the debounce
        XCTAssertEqual(inode(hosts), ino, "hosts file rewritten with unchanged content")
        XCTAssertEqual(inode(dir + "/dns.file_sd.json"), sdIno, "file_sd file rewritten with unchanged content")
        XCTAssertEqual(reloads(), before, "dnsmasq reloaded for unchanged content")
        print("discovery dns test: dnsmasq reloaded \(before) time(s) for \(try platform.inj.lastRev()) events so far")

        // Delete the app: no name resolves, the files hold no instance.
        try platform.scale("web", 0)
        XCTAssertTrue(eventually { dns.lookup("web.test.\(domain)").isEmpty }, "\(dns.lookup("web.test.\(domain)"))")
        for o in 0..<3 { XCTAssertEqual(dns.lookup("web-\(o).web.test.\(domain)"), []) }
        XCTAssertEqual(hostsLines(hosts), [])
        XCTAssertTrue(eventually { fileSdTargets(dir + "/dns.file_sd.json") == [:] })
        dns.stop()
    }

    func inj(_ p: Platform) -> EventInjector { p.inj }

    /// SIGKILL berthd while events are pending for the plugins (apps changing meanwhile); after each restart the
    /// files hold exactly the live state: no missing and no stale entries. Beside the plugin that feeds dnsmasq runs
    /// a slow one (discovery-dns behind the fixture wrapper, 25 ms per call), so that events are pending at a kill
    /// by construction, and a kill often lands in the middle of one of its calls.
    func testKillWithEventsPendingConvergesAfterRestart() throws {
        _ = try Tools.dns()
        let dir = tempDir("discovery-kill")
        let hosts = dir + "/dns.hosts", slowHosts = dir + "/slow.hosts", pid = dir + "/dnsmasq.pid"
        let dns = try DNSMasq(hostsFile: hosts, pidFile: pid, domain: domain, dir: dir)
        let wrapper = try FixtureBuilder.plugin("flaky", in: FixtureBuilder.packageRoot + "/Tests/Fixtures/discovery")
        let slow: JSON = ["name": "slow", "path": .string(wrapper),
                          "config": ["inner": .string(Paths.plugin("discovery-dns")), "failEvery": 0, "delayMs": 25,
                                     "innerConfig": ["hostsFile": .string(slowHosts), "fileSdFile": .string(dir + "/slow.file_sd.json"),
                                                     "domain": .string(domain), "debounceMs": 50]]]
        let d = try Daemon(plugins: [Platform.network(dir), dnsPlugin("dns", dir, pidFile: pid), slow], tag: "disc-kill")
        let platform = try Platform(d)
        try platform.scale("web", 3)
        XCTAssertTrue(try eventually { hostsLines(hosts) == (try platform.hostsLines(domain: domain)) }, d.log())

        final class Flag: @unchecked Sendable { let lock = NSLock(); var stop = false; var ops = 0 }
        var pendingAtKill: [Int64] = []
        var rng = SeededRandom(seed: 42)
        for round in 0..<4 {
            // Apps change continuously on another thread; berthd is killed while that goes on.
            let flag = Flag()
            let seed = rng.next()
            let done = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                var r = SeededRandom(seed: seed)
                while !flag.lock.withLock({ flag.stop }) {
                    let app = "svc-\(r.next() % 12)", n = Int(r.next() % 4)
                    do { try platform.scale(app, n) } catch {
                        if !platform.real { print("discovery kill test: churn stopped: \(error)") }  // real: berthd was killed
                        break
                    }
                    flag.lock.withLock { flag.ops += 1 }
                }
                done.signal()
            }
            usleep(UInt32(300_000 + Int(rng.next() % 700_000)))
            if platform.real {
                // One more app, committed when the response arrives; SIGKILL right then, with the other thread still
                // changing apps: its events cannot all have been delivered.
                try platform.applyNoWait("burst-\(round)", 5)
                d.kill9()
                flag.lock.withLock { flag.stop = true }
                done.wait()
            } else {
                flag.lock.withLock { flag.stop = true }
                done.wait()
                d.kill9()  // right after the last burst was committed
            }
            let last = try platform.inj.lastRev()
            let pendingDNS = last - (try platform.inj.cursor("dns") ?? 0), pendingSlow = last - (try platform.inj.cursor("slow") ?? 0)
            pendingAtKill.append(max(pendingDNS, pendingSlow))
            try d.start()
            let want = { try platform.hostsLines(domain: self.domain) }
            for file in [hosts, slowHosts] {
                XCTAssertTrue(try eventually { hostsLines(file) == (try want()) },
                              "round \(round), \(file): \(Set(hostsLines(file)).symmetricDifference((try? want()) ?? []).sorted().prefix(6))\n\(d.log().suffix(2000))")
            }
            for file in ["dns", "slow"] {
                XCTAssertTrue(try eventually { fileSdTargets(dir + "/\(file).file_sd.json") == (try platform.targets()) })
            }
            let liveCount = try platform.running().count
            print("discovery kill test: round \(round): \(flag.ops) app changes; pending at SIGKILL: dns \(pendingDNS), slow \(pendingSlow) event(s); \(liveCount) running after restart")
        }
        XCTAssertTrue(pendingAtKill.contains { $0 > 0 }, "events were pending for the plugin at some SIGKILL: \(pendingAtKill)")
        // dnsmasq agrees: running names answer their address, a removed one answers nothing.
        let live = try platform.running()
        for i in live.sorted(by: { ($0.app, $0.ordinal) < ($1.app, $1.ordinal) }).prefix(6) {
            XCTAssertEqual(dns.lookup("\(i.app)-\(i.ordinal).\(i.app).test.\(domain)"), [i.ip])
        }
        try platform.scale("web", 1)
        XCTAssertTrue(eventually { dns.lookup("web-2.web.test.\(domain)").isEmpty })
        let (_, p) = try d.request("GET", "/v1/plugins/dns")
        XCTAssertGreaterThanOrEqual(p["discovery"]?["resyncs"]?.int ?? 0, 1, p.serialized)
        dns.stop()
    }

    /// A plugin that fails every other call (before or after applying) still converges; a second discovery plugin
    /// beside it keeps up, and the daemon's other work (changing apps, reading state) is answered promptly meanwhile.
    func testFlakyPluginConvergesWhileTheDaemonWorks() throws {
        let flaky = try FixtureBuilder.plugin("flaky", in: FixtureBuilder.packageRoot + "/Tests/Fixtures/discovery")
        let dir = tempDir("discovery-flaky")
        func wrapper(_ name: String, failEvery: Int, delayMs: Int) -> JSON {
            ["name": .string(name), "path": .string(flaky),
             "config": ["inner": .string(Paths.plugin("discovery-dns")), "failEvery": .number(Double(failEvery)), "delayMs": .number(Double(delayMs)),
                        "innerConfig": ["hostsFile": .string("\(dir)/\(name).hosts"), "fileSdFile": .string("\(dir)/\(name).file_sd.json"),
                                        "domain": .string(domain), "debounceMs": 20]]]
        }
        let d = try Daemon(plugins: [Platform.network(dir), wrapper("flaky", failEvery: 2, delayMs: 40), wrapper("steady", failEvery: 0, delayMs: 0),
                                     ["name": "hello", "path": .string(Paths.plugin("hello"))]], tag: "disc-flaky")
        let platform = try Platform(d)
        var rng = SeededRandom(seed: 7)
        var latencies: [Double] = []
        var statuses: Set<Int> = []
        func timed(_ body: () throws -> Int) rethrows {
            let t0 = Date()
            statuses.insert(try body())
            latencies.append(Date().timeIntervalSince(t0))
        }
        for _ in 0..<40 {
            // The daemon's other work while the flaky plugin fails and retries: changing apps and reading state.
            try timed { try platform.scale("app-\(rng.next() % 6)", Int(rng.next() % 4)); return 200 }
            for path in ["/healthz", "/v1/plugins", "/v1/events?since=0&limit=5", "/metrics", "/v1/site"] {
                try timed { try UnixHTTPConnection(path: d.socket).request("GET", path).status }
            }
        }
        let want = try platform.hostsLines(domain: domain)
        XCTAssertTrue(eventually(30) { hostsLines("\(dir)/flaky.hosts") == want },
                      "\(Set(hostsLines("\(dir)/flaky.hosts")).symmetricDifference(want).sorted().prefix(6))\n\(d.log().suffix(3000))")
        XCTAssertTrue(eventually { hostsLines("\(dir)/steady.hosts") == want })
        let targets = try platform.targets()
        XCTAssertTrue(eventually { fileSdTargets("\(dir)/flaky.file_sd.json") == targets })
        XCTAssertEqual(statuses, [200])
        let sorted = latencies.sorted()
        print("discovery flaky test: \(latencies.count) operations while delivering, median \(Int(sorted[sorted.count / 2] * 1000)) ms, p95 \(Int(sorted[sorted.count * 95 / 100] * 1000)) ms, max \(Int(sorted.last! * 1000)) ms")
        XCTAssertLessThan(sorted.last!, 2.0, "an operation waited behind the failing plugin")

        let (_, p) = try d.request("GET", "/v1/plugins/flaky")
        XCTAssertGreaterThan(p["discovery"]?["failures"]?.int ?? 0, 0, p.serialized)
        XCTAssertTrue(eventually { (try? d.request("GET", "/v1/plugins/flaky").1["discovery"]?["lag"]) == 0 })
        let (_, s) = try d.request("GET", "/v1/plugins/steady")
        XCTAssertEqual(s["discovery"]?["failures"], 0, s.serialized)
        let metrics = try UnixHTTPConnection(path: d.socket).request("GET", "/metrics").text
        XCTAssertTrue(metrics.contains("berth_discovery_failures_total{plugin=\"flaky\"} "), metrics)
        XCTAssertFalse(metrics.contains("berth_discovery_failures_total{plugin=\"flaky\"} 0\n"), metrics)
        XCTAssertTrue(metrics.contains("berth_discovery_failures_total{plugin=\"steady\"} 0\n"), metrics)
    }

    /// `berth events --watch` follows a real berthd: the log so far, then new events as they come.
    func testEventsWatchFollowsTheDaemon() throws {
        let dir = tempDir("discovery-watch")
        let d = try Daemon(plugins: [Platform.network(dir), dnsPlugin("dns", dir)], tag: "disc-watch")
        let platform = try Platform(d)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Paths.bin + "/berth")
        p.arguments = ["events", "--watch", "--since", "0", "-o", "json", "--socket", d.socket]
        let pipe = Pipe()
        p.standardOutput = pipe
        final class Buffer: @unchecked Sendable { let lock = NSLock(); var text = "" }
        let buf = Buffer()
        pipe.fileHandleForReading.readabilityHandler = { h in
            let s = String(decoding: h.availableData, as: UTF8.self)
            buf.lock.withLock { buf.text += s }
        }
        try p.run()
        defer { if p.isRunning { p.terminate(); p.waitUntilExit() }; pipe.fileHandleForReading.readabilityHandler = nil }
        func lines() -> [JSON] { buf.lock.withLock { buf.text }.split(separator: "\n").compactMap { try? JSON.parse(String($0)) } }
        XCTAssertTrue(eventually(10) { lines().contains { $0["type"] == "plugin.loaded" } }, buf.lock.withLock { buf.text })
        try platform.scale("web", 1)
        let ip = try platform.running().first!.ip
        let last = try platform.inj.lastRev()
        XCTAssertTrue(eventually(10) { lines().contains { $0["rev"]?.int == Int(last) } }, buf.lock.withLock { buf.text })
        let revs = lines().compactMap { $0["rev"]?.int }
        XCTAssertEqual(revs, Array(1...Int(last)), "every event once, in order")
        let running = lines().last { $0["type"] == "instance.running" }
        XCTAssertEqual(running?["subject"], "App/web/0")
        XCTAssertEqual(running?["data"]?["ips"], [.string(ip)])

        // The raw stream: GET /v1/events?since=REV&watch=true.
        var got: [JSON] = []
        try UnixHTTPConnection(path: d.socket, timeoutSeconds: 10).stream("/v1/events?since=\(last - 1)&watch=true") { chunk in
            got += String(decoding: chunk, as: UTF8.self).split(separator: "\n").compactMap { try? JSON.parse(String($0)) }
            return got.isEmpty
        }
        XCTAssertEqual(got.first?["rev"]?.int, Int(last))

        // Watch streams that were open do not hold up berthd's shutdown for long.
        p.terminate()
        p.waitUntilExit()
        let t0 = Date()
        d.stop()
        XCTAssertLessThan(Date().timeIntervalSince(t0), 8, "berthd took long to stop after watch streams")
    }

    /// In-process: delivery from the durable cursor, lag, a resync from the snapshot source when a plugin falls too far
    /// behind (maxLag 50 here), and a resync after a reload (a new instance). The test's discovery coordinator gets its
    /// snapshots from the test's model instead of the workloads.
    func testDeliveryCursorLagAndResyncInProcess() async throws {
        let dir = tempDir("discovery-inproc")
        let siteJSON: JSON = ["site": "unit", "stateDir": .string(dir + "/state"), "store": ["sync": "normal"],
                              "plugins": [dnsPlugin("dns", dir, debounceMs: 0)]]
        let site = try SiteConfig.parse(siteJSON.bytes, baseDir: dir)
        let rt = try BerthRuntime(site: site)
        rt.loadPlugins()
        XCTAssertNotNil(rt.entry("dns")?.instance, "\(rt.entry("dns")?.stateName ?? "-")")
        var model = PlatformModel()
        func record(_ evs: [(type: String, subject: String, data: JSON)]) async throws {
            for e in evs { try await rt.record(type: e.type, subject: e.subject, data: e.data) }
        }
        // The snapshot the workload service would give (here: the test's model).
        let snapLock = NSLock()
        var snapshotInstances: [JSON] = []
        var settings = DiscoverySettings()
        settings.maxLag = 50
        let discovery = DiscoveryService(host: rt.host, snapshotPage: { _, _ in (snapLock.withLock { snapshotInstances }, nil) }, settings: settings)
        func publish(_ m: PlatformModel) {
            let list = m.running.values.map { PlatformModel.data($0.app, $0.ordinal, "running", $0.ip) }
            snapLock.withLock { snapshotInstances = list }
        }
        for o in 0..<3 { model.start("web", o, "10.1.0.\(10 + o)") }
        try await record(model.drain())
        publish(model)
        discovery.start()
        defer { discovery.stop(); rt.shutdown() }
        let hosts = dir + "/dns.hosts"
        XCTAssertTrue(eventually { hostsLines(hosts) == model.hostsLines(site: "unit", domain: self.domain) }, hostsLines(hosts).joined(separator: "\n"))
        let delivery = discovery.delivery("dns")!
        XCTAssertTrue(eventually { delivery.status.lag == 0 && delivery.status.phase == "idle" })
        let r0 = delivery.status.resyncs
        XCTAssertEqual(r0, 1, "one resync at start")

        // The durable cursor is in the store and equals the last revision.
        let head = try rt.executor.runSync { try rt.store.lastRevision() }
        XCTAssertEqual(try rt.executor.runSync { try rt.store.discoveryCursor("dns")?.rev }, head)
        XCTAssertEqual(rt.entry("dns")?.json["discovery"]?["cursor"]?.int, Int(head))

        // Too far behind: a resync instead of the events. (The snapshot is what counts then.)
        var model2 = model
        for o in 0..<40 { model2.start("bulk", o, "10.4.0.\(1 + o)") }
        model2.stop("web", 1, "10.1.0.11")
        publish(model2)
        let evs = model2.drain()
        try await rt.executor.run {
            for e in evs { rt.executor.noteEvent(try rt.store.appendEvent(type: e.type, subject: e.subject, data: e.data)) }
        }
        XCTAssertTrue(eventually { hostsLines(hosts) == model2.hostsLines(site: "unit", domain: self.domain) })
        XCTAssertTrue(eventually { delivery.status.resyncs == r0 + 1 }, "\(delivery.json.serialized)")

        // A reload (new instance) gets a resync too.
        _ = try rt.reload("dns", actor: "test")
        XCTAssertTrue(eventually { (discovery.delivery("dns")?.status.resyncs ?? 0) >= r0 + 2 }, "\(delivery.json.serialized)")
        XCTAssertTrue(discovery.metricsText().contains("berth_discovery_lag_events{plugin=\"dns\"}"))
    }

    /// Destroying the plugin (shutdown, reload) with a write still waiting for its debounce flushes it first.
    func testDestroyFlushesPendingWrites() async throws {
        let dir = tempDir("discovery-flush")
        let siteJSON: JSON = ["site": "unit", "stateDir": .string(dir + "/state"), "store": ["sync": "normal"],
                              "plugins": [dnsPlugin("dns", dir, debounceMs: 20_000)]]
        let rt = try BerthRuntime(site: try SiteConfig.parse(siteJSON.bytes, baseDir: dir))
        rt.loadPlugins()
        let discovery = DiscoveryService(host: rt.host, snapshotPage: { _, _ in ([], nil) })
        discovery.start()
        let delivery = discovery.delivery("dns")!
        // The start-up resync (of an empty snapshot) must come first: events recorded before it are covered by it.
        XCTAssertTrue(eventually(5) { delivery.status.resyncs >= 1 }, delivery.json.serialized)
        var model = PlatformModel()
        model.start("web", 0, "10.1.0.10")
        for e in model.drain() { try await rt.record(type: e.type, subject: e.subject, data: e.data) }
        let last = try rt.executor.runSync { try rt.store.lastRevision() }
        XCTAssertTrue(eventually(5) { delivery.status.cursor == last && delivery.status.delivered > 0 }, delivery.json.serialized)
        let hosts = dir + "/dns.hosts"
        XCTAssertEqual(hostsLines(hosts), [], "written before the 20 s debounce")
        discovery.stop()
        rt.shutdown()
        XCTAssertEqual(hostsLines(hosts), model.hostsLines(site: "unit", domain: domain))
    }

    /// `berth plugin check` runs the discovery conformance cases; discovery-dns passes them all.
    func testPluginCheckDiscoveryConformance() throws {
        let (rc, out, err) = try runTool(Paths.bin + "/berth", ["plugin", "check", Paths.plugin("discovery-dns"), "-o", "json"])
        XCTAssertEqual(rc, 0, out + err)
        let report = try JSON.parse(out)
        let names = (report["cases"]?.array ?? []).compactMap { $0["name"]?.string }
        for c in ["discovery: repeated batch is idempotent", "discovery: out-of-order batch", "discovery: resync converges",
                  "discovery: malformed JSON is refused (events)", "discovery: malformed JSON is refused (resync)"] {
            XCTAssertTrue(names.contains(c), "missing case \(c): \(names)")
        }
        XCTAssertEqual(report["failed"], 0, out)
    }

    /// A hosts file in a directory that does not exist is refused when the plugin is configured, naming the key
    /// and the directory, rather than failing every write later.
    func testMissingOutputDirectoryIsRefusedAtConfiguration() throws {
        let dir = try FixtureBuilder.makeTempDir("berth-dns-cfg")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try #"{"hostsFile": "/nonexistent-berth-dir/hosts"}"#.write(toFile: dir + "/c.json", atomically: true, encoding: .utf8)
        let (rc, out, err) = try runTool(Paths.bin + "/berth", ["plugin", "check", Paths.plugin("discovery-dns"), "--config", dir + "/c.json"])
        XCTAssertEqual(rc, 1, out + err)
        XCTAssertTrue(out.contains("config.hostsFile: directory /nonexistent-berth-dir of /nonexistent-berth-dir/hosts does not exist"), out)
        try #"{"fileSdFile": "\#(dir)/c.json/x.json"}"#.write(toFile: dir + "/d.json", atomically: true, encoding: .utf8)
        let (rc2, out2, _) = try runTool(Paths.bin + "/berth", ["plugin", "check", Paths.plugin("discovery-dns"), "--config", dir + "/d.json"])
        XCTAssertEqual(rc2, 1, out2)
        XCTAssertTrue(out2.contains("config.fileSdFile: \(dir)/c.json (for \(dir)/c.json/x.json) is not a directory"), out2)
    }

    /// The conformance cases catch a plugin that is not idempotent (a C fixture that counts deliveries).
    func testPluginCheckCatchesNonIdempotentPlugin() throws {
        let so = try FixtureBuilder.plugin("counting", in: FixtureBuilder.packageRoot + "/Tests/Fixtures/discovery")
        let (rc, out, _) = try runTool(Paths.bin + "/berth", ["plugin", "check", so, "-o", "json"])
        XCTAssertNotEqual(rc, 0, out)
        let cases = try JSON.parse(out)["cases"]?.array ?? []
        func result(_ n: String) -> String? { cases.first { $0["name"]?.string == n }?["result"]?.string }
        XCTAssertEqual(result("discovery: repeated batch is idempotent"), "fail", out)
        XCTAssertEqual(result("discovery: malformed JSON is refused (events)"), "fail", out)
    }
}

/// A small deterministic generator (SplitMix64) so that failures reproduce.
struct SeededRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
