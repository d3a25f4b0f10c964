// The node agent end to end, as root, with real parts: a busybox rootfs made here, berthd with ipam-pool and
// runtime-oci (runc), the CNI bridge plugin with berth-cni as IPAM. Three instances serve HTTP at the address Berth
// recorded; a killed process is restarted; a kill -9 of berthd leaves them serving and they are reattached, not
// restarted; scale-down and delete leave no namespace, veth, container or cgroup.
import BerthCheck
import BerthWire
import Foundation
import XCTest

final class NodeAgentTests: XCTestCase {
    let tag = Int(getpid() % 200) + 20
    var bridge: String { "bea\(getpid() % 100000)" }
    var cgroupParent: String { "berth-e2e-\(getpid())" }
    let node = "e2e-node"

    /// A busybox-static root filesystem: sh and httpd, and the mount points runc needs.
    func rootfs() throws -> String {
        let rfs = tempDir("agent-rootfs") + "/rootfs"
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] { try FileManager.default.createDirectory(atPath: "\(rfs)/\(d)", withIntermediateDirectories: true) }
        try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: rfs + "/bin/busybox")
        for a in ["sh", "httpd", "mkdir", "echo", "sleep", "cp", "cat", "test", "["] { try FileManager.default.createSymbolicLink(atPath: "\(rfs)/bin/\(a)", withDestinationPath: "/bin/busybox") }
        return rfs
    }

    func requireParts() throws {
        guard getuid() == 0 else { throw XCTSkip("the node agent's end-to-end test runs as root (CI runs it)") }
        for p in ["/usr/sbin/runc", "/bin/busybox", "/usr/lib/cni/bridge", "/usr/bin/curl", Paths.bin + "/berth-cni", Paths.bin + "/berth-runtime-monitor"] {
            XCTAssertTrue(FileManager.default.isExecutableFile(atPath: p), "\(p) is missing (Debian: runc, busybox-static, containernetworking-plugins, curl)")
        }
    }

    func daemon(_ dir: String, extra: [JSON] = []) throws -> Daemon {
        let plugins: JSON = .array(extra + [
            ["name": "lan", "path": .string(Paths.plugin("ipam-pool")),
             "config": ["defaultPool": "p", "pools": [["name": "p", "ranges": [["subnet": .string("10.231.\(tag).0/24"), "gateway": .string("10.231.\(tag).1")]]]]]],
            ["name": "oci", "path": .string(Paths.plugin("runtime-oci")),
             "config": ["runtime": "runc", "monitor": .string(Paths.bin + "/berth-runtime-monitor"), "stateDir": .string(dir + "/oci"),
                        "cgroupParent": .string(cgroupParent)]],
        ])
        let d = try Daemon(plugins: plugins, tag: "agent", extra: [("node", .string(node)),
                                                                    ("agent", ["tickSeconds": 0.5, "bridge": .string(bridge), "backoffSeconds": 0.2])])
        let (st, body) = try d.request("PUT", "/v1/nodes/\(node)", ["capacity": ["cpu": "8", "memory": "8Gi", "disk": "10Gi"]])
        XCTAssertEqual(st, 201, body.serialized)
        return d
    }

    func instances(_ d: Daemon, _ app: String) throws -> [JSON] {
        let (st, body) = try d.request("GET", "/v1/instances?app=\(app)")
        XCTAssertEqual(st, 200, body.serialized)
        return body["instances"]?.array ?? []
    }

    @discardableResult
    func waitFor<T>(_ what: String, timeout: Double = 30, file: StaticString = #filePath, line: UInt = #line, _ probe: () throws -> T?) throws -> T {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let v = try probe() { return v }
            usleep(100_000)
        }
        XCTFail("timed out waiting for \(what)", file: file, line: line)
        throw NSError(domain: "NodeAgentTests", code: 1, userInfo: [NSLocalizedDescriptionKey: "timed out waiting for \(what)"])
    }

    func get(_ ip: String, _ path: String) -> String? {
        guard let (rc, out, _) = try? runTool("/usr/bin/curl", ["-s", "--max-time", "2", "http://\(ip):8080/\(path)"]), rc == 0 else { return nil }
        return out
    }

    func events(_ d: Daemon, _ type: String, since: Int64 = 0) throws -> [JSON] {
        let (_, body) = try d.request("GET", "/v1/events?since=\(since)&limit=10000")
        return (body["events"]?.array ?? []).filter { $0["type"]?.string == type }
    }

    func netns() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []).filter { $0.hasPrefix("berth-web-") } }
    func veths() -> String { (try? runTool("/usr/sbin/ip", ["-o", "link", "show", "master", bridge]).1) ?? "" }
    /// The cgroup parent's directory under every mounted hierarchy (v1 controllers, the unified one, or v2's root).
    func cgroupRoots() -> [String] {
        let hier = ((try? FileManager.default.contentsOfDirectory(atPath: "/sys/fs/cgroup")) ?? []).map { "/sys/fs/cgroup/\($0)/\(cgroupParent)" }
        return (hier + ["/sys/fs/cgroup/\(cgroupParent)"]).filter { FileManager.default.fileExists(atPath: $0) }
    }

    func cgroups() -> [String] {
        cgroupRoots().flatMap { r in ((try? FileManager.default.contentsOfDirectory(atPath: r)) ?? []).filter { $0.hasPrefix("web-") || $0.hasPrefix("db-") }.map { "\(r)/\($0)" } }
    }

    func cleanUp(_ dir: String) {
        for n in netns() + dbNetns() { _ = try? runTool("/usr/sbin/ip", ["netns", "delete", n]) }
        let root = dir + "/oci/runtime"
        if let (_, out, _) = try? runTool("/usr/sbin/runc", ["--root", root, "list", "-q"]) {
            for id in out.split(separator: "\n") { _ = try? runTool("/usr/sbin/runc", ["--root", root, "delete", "--force", String(id)]) }
        }
        _ = try? runTool("/usr/sbin/ip", ["link", "delete", bridge])
        // The site's cgroup parent stays after its instances' cgroups go (runtime-oci removes those): the test's own is removed.
        for r in cgroupRoots() { _ = try? runTool("/usr/bin/find", [r, "-depth", "-type", "d", "-exec", "rmdir", "{}", ";"]) }
    }

    func testThreeReplicasServeAtTheirAddressesRestartReattachAndTearDown() throws {
        try requireParts()
        let rfs = try rootfs()
        let ociDir = tempDir("agent-oci")
        defer { cleanUp(ociDir) }
        // Names through the discovery plugin and a real dnsmasq (reloaded by SIGHUP when the hosts file changes).
        let dnsDir = tempDir("agent-dns"), domain = "berth.test"
        let dns = try DNSMasq(hostsFile: dnsDir + "/hosts", pidFile: dnsDir + "/dnsmasq.pid", domain: domain, dir: dnsDir)
        defer { dns.stop() }
        // Each instance has a volume (storage-local), mounted at /volumes/www, which its HTTP server serves.
        let vols = tempDir("agent-web-vols")
        let d = try daemon(ociDir, extra: [["name": "dns", "path": .string(Paths.plugin("discovery-dns")),
                                            "config": ["hostsFile": .string(dnsDir + "/hosts"), "fileSdFile": .string(dnsDir + "/file_sd.json"),
                                                       "domain": .string(domain), "debounceMs": 50, "pidFile": .string(dnsDir + "/dnsmasq.pid")]],
                                           ["name": "local", "path": .string(Paths.plugin("storage-local")),
                                            "config": ["root": .string(vols), "capacityBytes": 268_435_456, "nodes": [.string(node)]]]])
        let script = "echo hello-from-$BERTH_APP-$BERTH_ORDINAL; echo \"$BERTH_APP/$BERTH_ORDINAL/$BERTH_IP/$BERTH_NODE\" > /volumes/www/id && mkdir -p /dev/shm/www && echo \"$BERTH_APP/$BERTH_ORDINAL/$BERTH_IP/$BERTH_NODE\" > /dev/shm/www/id && exec httpd -f -p 8080 -h /volumes/www"
        let spec: JSON = ["replicas": 3, "network": ["name": "lan"], "volumes": [["name": "www", "size": "4Mi", "local": true]],
                          "run": ["rootfs": .string(rfs), "command": "/bin/sh", "args": ["-c", .string(script)], "graceSeconds": 2]]
        let (st, body) = try d.request("PUT", "/v1/kinds/App/web", ["spec": spec])
        XCTAssertEqual(st, 201, body.serialized)

        // Each instance answers at the exact address Berth recorded, with its identity in its environment.
        let up = try waitFor("3 running instances") { () -> [JSON]? in
            let xs = try instances(d, "web")
            return xs.count == 3 && xs.allSatisfy({ $0["state"] == "running" && $0["runtime"]?["phase"] == "running" }) ? xs : nil
        }
        var ips: [Int: String] = [:]
        var pids: [Int: Int] = [:]
        for x in up {
            let ord = x["ordinal"]!.int!, ip = x["ips"]![0]!.string!
            ips[ord] = ip
            pids[ord] = x["runtime"]!["pid"]!.int!
            let id = try waitFor("HTTP from web-\(ord) at \(ip)") { get(ip, "id") }
            XCTAssertEqual(id.trimmingCharacters(in: .whitespacesAndNewlines), "web/\(ord)/\(ip)/\(node)")
        }
        XCTAssertEqual(Set(ips.values).count, 3, "three distinct addresses: \(ips)")
        // What each serves is its volume's file: it is in the volume's directory on the node.
        let served = (try? FileManager.default.contentsOfDirectory(atPath: vols + "/volumes")) ?? []
        let files = served.compactMap { try? String(contentsOfFile: "\(vols)/volumes/\($0)/id", encoding: .utf8) }.map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        XCTAssertEqual(Set(files), Set(ips.map { "web/\($0.key)/\($0.value)/\(node)" }), "the served files are the volumes' files: \(served)")
        // Each instance's name resolves to its address, and the instance answers at what the name resolves to.
        for (ord, ip) in ips {
            let name = "web-\(ord).web.test.\(domain)"
            XCTAssertTrue(eventually { dns.lookup(name) == [ip] }, "\(name): \(dns.lookup(name)), want \(ip)")
            let at = dns.lookup(name).first ?? "none"
            XCTAssertEqual(get(at, "id")?.trimmingCharacters(in: .whitespacesAndNewlines), "web/\(ord)/\(ip)/\(node)", "served at \(name) (\(at))")
        }
        XCTAssertEqual(dns.lookup("web.test.\(domain)"), ips.values.sorted(), "the app's name answers every instance")
        // The CNI chain's IPAM (berth-cni) answered from the placement's own attachment: no second address was taken,
        // and the address inside the instance is the recorded one.
        let (_, atts) = try d.request("GET", "/v1/networks/lan/attachments")
        XCTAssertEqual(atts["attachments"]?.array?.count, 3, atts.serialized)
        let cid0 = up.first { $0["ordinal"] == 0 }!["containerID"]!.string!
        let (_, inNs, _) = try runTool("/usr/sbin/ip", ["-n", "berth-\(cid0)", "-o", "-4", "addr", "show", "eth0"])
        XCTAssertTrue(inNs.contains(" \(ips[0]!)/24 "), inNs)
        // berth logs APP/ORDINAL: the instance's output; the table of berth instances shows the runtime's view.
        let (lrc, lout, lerr) = try runTool(Paths.bin + "/berth", ["logs", "web/2", "--socket", d.socket])
        XCTAssertEqual(lrc, 0, lerr)
        XCTAssertTrue(lout.contains("hello-from-web-2"), lout)
        // berth exec: a command inside the instance, its output and exit code.
        let (erc, eout, eerr) = try runTool(Paths.bin + "/berth", ["exec", "web/1", "--socket", d.socket, "--", "cat", "/dev/shm/www/id"])
        XCTAssertEqual(erc, 0, eerr)
        XCTAssertEqual(eout.trimmingCharacters(in: .whitespacesAndNewlines), "web/1/\(ips[1]!)/\(node)")
        let (xrc, _, _) = try runTool(Paths.bin + "/berth", ["exec", "App/web/1", "--socket", d.socket, "--", "sh", "-c", "exit 3"])
        XCTAssertEqual(xrc, 3, "berth exec exits with the command's code")
        let (brc, bout, _) = try runTool(Paths.bin + "/berth", ["instances", "--app", "web", "--socket", d.socket])
        XCTAssertEqual(brc, 0)
        XCTAssertTrue(bout.contains("RESTARTS") && bout.split(separator: "\n").filter { $0.contains(" running ") }.count >= 3, bout)
        XCTAssertEqual(netns().count, 3)

        // Kill one instance's process: restarted per policy (always), counted, with an event; serving again.
        kill(pid_t(pids[1]!), SIGKILL)
        defer { if testRun?.hasSucceeded == false { print(d.log().suffix(3000)) } }
        let again = try waitFor("web-1 restarted") { () -> JSON? in
            let x = try instances(d, "web").first { $0["ordinal"] == 1 }
            return x?["runtime"]?["restarts"]?.int == 1 && x?["runtime"]?["phase"] == "running" ? x : nil
        }
        XCTAssertEqual(again["runtime"]?["lastExitCode"]?.int, 137, again.serialized)
        XCTAssertNotEqual(again["runtime"]?["pid"]?.int, pids[1])
        pids[1] = again["runtime"]!["pid"]!.int!
        XCTAssertEqual(try events(d, "runtime.restarted").filter { $0["subject"] == "App/web/1" }.count, 1)
        XCTAssertEqual(try events(d, "runtime.exited").filter { $0["subject"] == "App/web/1" }.first?["data"]?["exitCode"]?.int, 137)
        _ = try waitFor("web-1 serving after its restart") { get(ips[1]!, "id") }
        let (_, metrics) = try d.request("GET", "/metrics")
        XCTAssertTrue(metrics.string?.contains("berth_instance_restarts_total 1") ?? false, "metrics: \(metrics.string?.prefix(200) ?? "")")
        XCTAssertTrue(metrics.string?.contains("berth_instance_starts_total 4") ?? false)

        // kill -9 berthd: the instances keep serving; the new berthd reattaches without restarting them.
        let before = try events(d, "runtime.started").count
        d.kill9()
        for (ord, ip) in ips { XCTAssertNotNil(get(ip, "id"), "web-\(ord) serves while berthd is down") }
        try d.start()
        try waitFor("3 reattached") { try events(d, "runtime.reattached").count >= 3 ? true : nil }
        for x in try instances(d, "web") {
            let ord = x["ordinal"]!.int!
            XCTAssertEqual(x["runtime"]?["pid"]?.int, pids[ord], "web-\(ord) keeps its process across the berthd restart")
            XCTAssertEqual(x["runtime"]?["restarts"]?.int, ord == 1 ? 1 : 0)
        }
        XCTAssertEqual(try events(d, "runtime.started").count, before, "nothing was started again")
        XCTAssertEqual(try events(d, "runtime.restarted").count, 1)

        // Scale down to 1: ordinals 1 and 2 stop and their namespaces go.
        let (sst, sbody) = try d.request("PUT", "/v1/kinds/App/web", ["spec": spec.setting("replicas", 1)])
        XCTAssertEqual(sst, 200, sbody.serialized)
        try waitFor("two namespaces removed") { netns().count == 1 ? true : nil }
        XCTAssertNil(get(ips[2]!, "id"))
        XCTAssertNotNil(get(ips[0]!, "id"))

        // Drain the node: the last instance stops within its grace period (it comes back pending: no other node).
        let drainStart = Date()
        let (nst, nbody) = try d.request("POST", "/v1/nodes/\(node)/drain")
        XCTAssertEqual(nst, 200, nbody.serialized)
        try waitFor("the drained node's namespace removed") { netns().isEmpty ? true : nil }
        XCTAssertLessThan(Date().timeIntervalSince(drainStart), 2 + 3, "stopped within graceSeconds (2) and a tick")
        XCTAssertNil(get(ips[0]!, "id"))
        XCTAssertEqual(try instances(d, "web").first?["state"], "pending")

        // Delete: nothing is left (namespace, veth on the bridge, container, cgroup).
        let (dst, dbody) = try d.request("DELETE", "/v1/kinds/App/web")
        XCTAssertEqual(dst, 200, dbody.serialized)
        try waitFor("everything torn down") { netns().isEmpty && instancesGone(d) ? true : nil }
        XCTAssertEqual(veths().trimmingCharacters(in: .whitespacesAndNewlines), "", "veths left on \(bridge)")
        let (_, left, _) = try runTool("/usr/sbin/runc", ["--root", ociDir + "/oci/runtime", "list", "-q"])
        XCTAssertEqual(left.trimmingCharacters(in: .whitespacesAndNewlines), "", "containers left")
        XCTAssertEqual(cgroups(), [], "cgroups left")
        XCTAssertEqual(MountTable.mountPoints(under: d.dir), [], "volume stages or targets left mounted")
        XCTAssertEqual(try events(d, "runtime.stopped").count, 3, "two by the scale-down, one by the drain")
    }

    /// A StatefulApp ordinal deleted and re-placed: a new incarnation with the same address, its volume's data kept
    /// (mounted at /volumes/data), serving again; the old incarnation's namespace is gone.
    func testStatefulOrdinalComesBackWithTheSameAddressAndVolume() throws {
        try requireParts()
        let rfs = try rootfs()
        let ociDir = tempDir("agent-oci")
        defer { cleanUp(ociDir) }
        let d = try daemon(ociDir, extra: [
            ["name": "stateful", "path": .string(Paths.plugin("sched-stateful"))],
            ["name": "local", "path": .string(Paths.plugin("storage-local")),
             "config": ["root": .string(tempDir("agent-vols")), "capacityBytes": 268_435_456, "nodes": [.string(node)]]],
        ])
        let script = "test -f /volumes/data/first || echo \"$BERTH_IP\" > /volumes/data/first; echo \"$BERTH_APP/$BERTH_ORDINAL/$BERTH_IP\" > /volumes/data/id; exec httpd -f -p 8080 -h /volumes/data"
        let spec: JSON = ["replicas": 1, "network": ["name": "lan", "releasePolicy": "immutable"],
                          "volumes": [["name": "data", "size": "16Mi", "local": true]],
                          "run": ["rootfs": .string(rfs), "command": "/bin/sh", "args": ["-c", .string(script)], "graceSeconds": 1]]
        let (st, body) = try d.request("PUT", "/v1/kinds/StatefulApp/db", ["spec": spec])
        XCTAssertEqual(st, 201, body.serialized)
        func running() throws -> JSON {
            try waitFor("db-0 running") { () -> JSON? in
                let x = try instances(d, "db").first
                return x?["state"] == "running" && x?["runtime"]?["phase"] == "running" ? x : nil
            }
        }
        let first = try running()
        let ip = first["ips"]![0]!.string!
        /// The MAC of eth0 inside an incarnation's namespace.
        func mac(_ x: JSON) throws -> String {
            let (_, out, _) = try runTool("/usr/sbin/ip", ["-n", "berth-\(x["containerID"]!.string!)", "-o", "link", "show", "eth0"])
            return out.components(separatedBy: "link/ether ").dropFirst().first?.split(separator: " ").first.map(String.init) ?? "none: \(out)"
        }
        let firstMAC = try mac(first)
        XCTAssertEqual(try waitFor("db-0 serving") { get(ip, "id") }.trimmingCharacters(in: .whitespacesAndNewlines), "db/0/\(ip)")
        XCTAssertFalse(FileManager.default.fileExists(atPath: rfs + "/volumes/data/first"), "the file is on the volume mounted in the instance, not in the rootfs")
        let (dst, dbody) = try d.request("DELETE", "/v1/instances/StatefulApp/db/0")
        XCTAssertEqual(dst, 200, dbody.serialized)
        let second = try waitFor("db-0 re-placed and running") { () -> JSON? in
            let x = try running()
            return x["incarnation"] != first["incarnation"] ? x : nil
        }
        XCTAssertEqual(second["ips"]?[0]?.string, ip, "the same address after re-placement")
        XCTAssertEqual(try mac(second), firstMAC, "the same MAC after re-placement")
        let octets = ip.split(separator: ".").map { String(format: "%02x", Int($0)!) }
        XCTAssertEqual(firstMAC, "0a:58:" + octets.joined(separator: ":"), "the MAC follows the address")
        XCTAssertEqual(try waitFor("db-0 serving again") { get(ip, "first") }.trimmingCharacters(in: .whitespacesAndNewlines), ip,
                       "the volume's data outlived the first incarnation")
        try waitFor("only the new namespace") { netns().isEmpty && dbNetns() == ["berth-\(second["containerID"]!.string!)"] ? true : nil }
        let (xst, xbody) = try d.request("DELETE", "/v1/kinds/StatefulApp/db")
        XCTAssertEqual(xst, 200, xbody.serialized)
        try waitFor("db torn down") { dbNetns().isEmpty && instancesGone(d, "db") ? true : nil }
        XCTAssertEqual(veths().trimmingCharacters(in: .whitespacesAndNewlines), "", "veths left on \(bridge)")
        XCTAssertEqual(cgroups(), [], "cgroups left")
    }

    /// A command that does not exist in the rootfs (not checkable at apply: it is looked up on the instance's PATH) gives
    /// the instance a clear failed reason and a backoff, not a silent crash loop; deleting the app leaves nothing.
    func testACommandThatDoesNotExistShowsAFailedReason() throws {
        try requireParts()
        let rfs = try rootfs()
        let ociDir = tempDir("agent-oci")
        defer { cleanUp(ociDir) }
        let d = try daemon(ociDir)
        let (st, body) = try d.request("PUT", "/v1/kinds/App/web", ["spec": ["replicas": 1, "network": ["name": "lan"],
                                                                              "run": ["rootfs": .string(rfs), "command": "no-such-program"]]])
        XCTAssertEqual(st, 201, body.serialized)
        let failed = try waitFor("a failed reason") { () -> JSON? in
            let x = try instances(d, "web").first
            return x?["runtime"]?["phase"] == "failed" ? x : nil
        }
        XCTAssertTrue(failed["runtime"]?["reason"]?.string?.contains("no-such-program") ?? false, failed.serialized)
        XCTAssertEqual(failed["state"], "placed", "never reported running")
        sleep(2)
        let fails = try events(d, "runtime.failed").count
        XCTAssertEqual(fails, 1, "one event per distinct reason, not one per attempt")
        let (dst, dbody) = try d.request("DELETE", "/v1/kinds/App/web")
        XCTAssertEqual(dst, 200, dbody.serialized)
        try waitFor("torn down") { netns().isEmpty && instancesGone(d) ? true : nil }
        XCTAssertEqual(veths().trimmingCharacters(in: .whitespacesAndNewlines), "", "veths left on \(bridge)")
    }

    /// An HTTP health check: healthy while the instance serves /ok; once /ok is gone, after failureThreshold failed
    /// probes the instance is restarted (restart counted, a runtime.unhealthy event, the failure in its status), and
    /// the new process serves /ok again. A spec with two probes, or a bad port, is refused at apply.
    func testAFailingHealthCheckRestartsTheInstance() throws {
        try requireParts()
        let rfs = try rootfs()
        let ociDir = tempDir("agent-oci")
        defer { cleanUp(ociDir) }
        let d = try daemon(ociDir)
        let script = "mkdir -p /dev/shm/www && echo ok > /dev/shm/www/ok && exec httpd -f -p 8080 -h /dev/shm/www"
        func spec(_ health: JSON) -> JSON {
            ["replicas": 1, "network": ["name": "lan"],
             "run": ["rootfs": .string(rfs), "command": "/bin/sh", "args": ["-c", .string(script)], "graceSeconds": 1, "health": health]]
        }
        for (bad, words) in [(["tcp": ["port": 8080], "http": ["port": 8080]] as JSON, "exactly one"), (["tcp": ["port": 0]], "port"),
                             (["http": ["port": 8080, "path": "no-slash"]], "path")] {
            let (st, body) = try d.request("PUT", "/v1/kinds/App/web", ["spec": spec(bad)])
            XCTAssertEqual(st, 400, body.serialized)
            XCTAssertTrue(body["error"]?.string?.contains(words) ?? false, "\(bad.serialized): \(body.serialized)")
        }
        let (st, body) = try d.request("PUT", "/v1/kinds/App/web", ["spec": spec(["http": ["port": 8080, "path": "/ok"], "periodSeconds": 0.3,
                                                                                  "failureThreshold": 2, "timeoutSeconds": 1])])
        XCTAssertEqual(st, 201, body.serialized)
        let healthy = try waitFor("a healthy instance") { () -> JSON? in
            let x = try instances(d, "web").first
            return x?["runtime"]?["health"]?["status"] == "healthy" ? x : nil
        }
        let ip = healthy["ips"]![0]!.string!, pid = healthy["runtime"]!["pid"]!.int!
        XCTAssertEqual(healthy["runtime"]?["restarts"], 0)
        // Break it: the server stays up but /ok answers 404.
        let (erc, eout, eerr) = try runTool(Paths.bin + "/berth", ["exec", "web/0", "--socket", d.socket, "--", "sh", "-c", "rm /dev/shm/www/ok"])
        XCTAssertEqual(erc, 0, "\(eout) \(eerr)")
        let restarted = try waitFor("a restart after the failed health checks") { () -> JSON? in
            let x = try instances(d, "web").first
            return (x?["runtime"]?["restarts"]?.int ?? 0) >= 1 && x?["runtime"]?["phase"] == "running" ? x : nil
        }
        XCTAssertNotEqual(restarted["runtime"]?["pid"]?.int, pid, "a new process")
        // The last failure shows (a probe of the new process before it listens may have replaced the 404 by now).
        XCTAssertNotNil(restarted["runtime"]?["health"]?["lastFailure"]?.string, restarted.serialized)
        let unhealthy = try events(d, "runtime.unhealthy")
        XCTAssertEqual(unhealthy.count, 1, "one restart for one run of failures")
        XCTAssertTrue(unhealthy.first?["data"]?["reason"]?.string?.contains("/ok answered 404") ?? false, unhealthy.first?.serialized ?? "none")
        // The new process serves /ok again and is healthy; no second restart.
        try waitFor("healthy again") { try instances(d, "web").first?["runtime"]?["health"]?["status"] == "healthy" ? true : nil }
        XCTAssertEqual(get(ip, "ok")?.trimmingCharacters(in: .whitespacesAndNewlines), "ok")
        sleep(1)
        XCTAssertEqual(try instances(d, "web").first?["runtime"]?["restarts"], 1)
        // The node goes down (as when its lease lapses): its instance is stopped and its namespace removed.
        let (nst, nbody) = try d.request("POST", "/v1/nodes/\(node)/down")
        XCTAssertEqual(nst, 200, nbody.serialized)
        try waitFor("the down node's instance stopped") { netns().isEmpty && get(ip, "ok") == nil ? true : nil }
        XCTAssertEqual(try events(d, "runtime.stopped").count, 1, "stopped once")
        XCTAssertEqual(veths().trimmingCharacters(in: .whitespacesAndNewlines), "", "veths left on \(bridge)")
        let (dst, dbody) = try d.request("DELETE", "/v1/kinds/App/web")
        XCTAssertEqual(dst, 200, dbody.serialized)
        try waitFor("torn down") { netns().isEmpty && instancesGone(d) ? true : nil }
    }

    func dbNetns() -> [String] { ((try? FileManager.default.contentsOfDirectory(atPath: "/run/netns")) ?? []).filter { $0.hasPrefix("berth-db-") } }

    func instancesGone(_ d: Daemon, _ app: String = "web") -> Bool { ((try? instances(d, app)) ?? [JSON.null]).isEmpty }
}
