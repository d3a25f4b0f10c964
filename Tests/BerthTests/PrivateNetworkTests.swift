// Enterprise private networks through berthd: the node a CNI call allocates for comes from berthd, stateful
// identities named by the runtime (CNI_ARGS), the well-known socket link, berth-cni's main-plugin plan, and the
// duplicate-address scenario with a StatefulApp (an identity never held by two live attachments).
import BerthWire
import Foundation
import XCTest

final class PrivateNetworkTests: XCTestCase {
    var cni: String { Paths.bin + "/berth-cni" }

    static let vlan100: JSON = [
        "name": "vlan100",
        "ranges": [["subnet": "10.1.0.0/24", "start": "10.1.0.10", "end": "10.1.0.60", "gateway": "10.1.0.1"]],
        "reserved": ["10.1.0.10", "10.1.0.11", "10.1.0.12"],
        "macs": ["10.1.0.10": "52:54:00:01:00:10", "10.1.0.11": "52:54:00:01:00:11", "10.1.0.12": "52:54:00:01:00:12"],
        "vlan": 100, "nodes": ["node-a"], "parent": "eth9", "delegate": "macvlan",
    ]

    func daemon(_ tag: String, node: String = "node-a", extra: [(String, JSON)] = []) throws -> Daemon {
        try Daemon(plugins: [["name": "site", "path": .string(Paths.plugin("ipam-pool")), "config": ["pools": [Self.vlan100]]]],
                   tag: tag, extra: [("node", .string(node))] + extra)
    }

    func env(_ cmd: String, _ cid: String, args: String = "IgnoreUnknown=1") -> [String: String] {
        ["CNI_COMMAND": cmd, "CNI_CONTAINERID": cid, "CNI_NETNS": "/var/run/netns/none", "CNI_IFNAME": "eth0", "CNI_ARGS": args,
         "CNI_PATH": "/usr/lib/cni", "PATH": "/usr/bin:/bin"]
    }

    func ipamConf(_ d: Daemon, _ extra: [(String, JSON)] = []) -> JSON {
        var ipam: JSON = ["type": "berth-cni", "socket": .string(d.socket), "network": "site"]
        for (k, v) in extra { ipam = ipam.setting(k, v) }
        return ["cniVersion": "1.0.0", "name": "vlan100", "type": "macvlan", "ipam": ipam]
    }

    func attachment(_ d: Daemon, _ cid: String) throws -> JSON? {
        try d.request("GET", "/v1/networks/site/attachments").1["attachments"]?.array?.first { $0["containerID"]?.string == cid }
    }

    /// berth-cni allocates for the node berthd serves (site key `node`), so node-bound pools accept it; berthd says
    /// its node name; the configuration's "node" still wins.
    func testNodeComesFromBerthd() throws {
        let d = try daemon("cni-node")
        XCTAssertEqual(try d.request("GET", "/healthz").1["node"], "node-a")
        XCTAssertEqual(try d.request("GET", "/v1/site").1["node"], "node-a")
        var (rc, out, _) = try runTool(cni, [], env: env("ADD", "c1"), stdin: ipamConf(d).serialized)
        XCTAssertEqual(rc, 0, out)
        XCTAssertEqual(try attachment(d, "c1")?["node"], "node-a")
        (rc, out, _) = try runTool(cni, [], env: env("ADD", "c2"), stdin: ipamConf(d, [("node", "node-z")]).serialized)
        XCTAssertEqual(rc, 102, out)
        XCTAssertTrue(out.contains("usable from node node-z"), out)
    }

    /// Identities from the runtime: Berth's own CNI_ARGS keys, Kubernetes StatefulSet pods (when the configuration
    /// asks for it), runtimeConfig; delete and re-add the "pod": same address and MAC.
    func testIdentityFromCNIArgs() throws {
        let d = try daemon("cni-ident")
        func add(_ cid: String, _ args: String, _ conf: JSON? = nil) throws -> (Int32, JSON) {
            let (rc, out, _) = try runTool(cni, [], env: env("ADD", cid, args: args), stdin: (conf ?? ipamConf(d)).serialized)
            return (rc, (try? JSON.parse(out)) ?? .string(out))
        }
        func del(_ cid: String, _ conf: JSON? = nil) throws {
            let (rc, out, _) = try runTool(cni, [], env: env("DEL", cid), stdin: (conf ?? ipamConf(d)).serialized)
            XCTAssertEqual(rc, 0, out)
        }
        // A plain request naming a reserved address is refused (reserved means reserved).
        var (rc, r) = try add("plain", "IgnoreUnknown=1;IP=10.1.0.12")
        XCTAssertEqual(rc, 102, r.serialized)
        XCTAssertTrue(r["msg"]?.string?.contains("10.1.0.12 is reserved") ?? false, r.serialized)
        (rc, r) = try add("db-0-a", "IgnoreUnknown=1;BERTH_APP=db;BERTH_ORDINAL=0")
        XCTAssertEqual(rc, 0, r.serialized)
        XCTAssertEqual(r["ips"]?[0]?["address"], "10.1.0.10/24", "a stateful identity gets a reserved address")
        XCTAssertEqual(try attachment(d, "db-0-a")?["result"]?["ips"]?[0]?["mac"], "52:54:00:01:00:10")
        try del("db-0-a")
        (rc, r) = try add("db-0-b", "IgnoreUnknown=1;BERTH_APP=db;BERTH_ORDINAL=0")
        XCTAssertEqual(r["ips"]?[0]?["address"], "10.1.0.10/24", "immutable by default: the same address after DEL and ADD")
        XCTAssertEqual(try attachment(d, "db-0-b")?["result"]?["ips"]?[0]?["mac"], "52:54:00:01:00:10")
        // Kubernetes StatefulSet pod names map to <namespace>/<set> and the ordinal, only when asked for.
        let k8s = "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=x"
        let k8sConf = ipamConf(d, [("identity", ["kubernetes": true])])
        (rc, r) = try add("k1", k8s, k8sConf)
        XCTAssertEqual(r["ips"]?[0]?["address"], "10.1.0.11/24")
        let show = try d.request("GET", "/v1/networks/site/pools/vlan100").1
        let rec = show["addresses"]?.array?.first { $0["address"] == "10.1.0.11" }
        XCTAssertEqual(rec?["app"], "prod/web")
        XCTAssertEqual(rec?["ordinal"], "1")
        try del("k1", k8sConf)
        (rc, r) = try add("k2", k8s, k8sConf)
        XCTAssertEqual(r["ips"]?[0]?["address"], "10.1.0.11/24", "the pod re-created keeps its address")
        (rc, r) = try add("k3", "IgnoreUnknown=1;K8S_POD_NAMESPACE=prod;K8S_POD_NAME=web-2")
        XCTAssertEqual(r["ips"]?[0]?["address"], "10.1.0.13/24", "without identity.kubernetes, pod names are not identities")
        // runtimeConfig names it too.
        let rcConf = ipamConf(d).setting("runtimeConfig", ["identity": ["app": "cache", "ordinal": 0, "releasePolicy": "immutable"]])
        (rc, r) = try add("cache-0", "IgnoreUnknown=1", rcConf)
        XCTAssertEqual(r["ips"]?[0]?["address"], "10.1.0.12/24")
        // Bad identities: clear errors, nothing allocated.
        (rc, r) = try add("bad", "IgnoreUnknown=1;BERTH_APP=db;BERTH_ORDINAL=x")
        XCTAssertEqual(rc, 7)
        XCTAssertEqual(r["msg"], "CNI_ARGS BERTH_ORDINAL \"x\" is not a non-negative integer")
        (rc, r) = try add("bad", "IgnoreUnknown=1;BERTH_ORDINAL=1")
        XCTAssertEqual(rc, 7)
        XCTAssertNil(try attachment(d, "bad"))
    }

    /// The plan berthd gives berth-cni as a main plugin: macvlan on the host's VLAN sub-interface, the address through
    /// static IPAM, the bound MAC; DEL plans first and releases only when asked.
    func testMainPluginPlan() throws {
        let d = try daemon("cni-plan")
        let conf: JSON = ["cniVersion": "1.1.0", "name": "vlan100", "type": "berth-cni", "network": "site", "delegate": ["mode": "private"]]
        func cniCall(_ cmd: String, _ extra: [(String, JSON)] = [], config: JSON? = nil) throws -> JSON {
            var body: JSON = ["command": .string(cmd), "containerID": "m1", "ifname": "eth0", "netns": "/x", "args": "BERTH_APP=db;BERTH_ORDINAL=1",
                              "config": config ?? conf, "main": true]
            for (k, v) in extra { body = body.setting(k, v) }
            let (st, r) = try d.request("POST", "/v1/cni", body)
            XCTAssertEqual(st, 200, r.serialized)
            return r
        }
        var r = try cniCall("ADD")
        XCTAssertEqual(r["exitCode"], 0, r.serialized)
        let plan = r["stdout"] ?? .null
        XCTAssertEqual(plan["created"], true)
        XCTAssertEqual(plan["vlanLink"], ["parent": "eth9", "vlan": 100, "name": "eth9.100"])
        let dlg = plan["delegate"] ?? .null
        XCTAssertEqual(dlg["type"], "macvlan")
        XCTAssertEqual(dlg["master"], "eth9.100")
        XCTAssertEqual(dlg["mode"], "private", "the configuration's delegate keys override")
        XCTAssertEqual(dlg["cniVersion"], "1.0.0")
        XCTAssertEqual(dlg["runtimeConfig"]?["mac"], "52:54:00:01:00:10")
        XCTAssertEqual(dlg["ipam"], ["type": "static", "addresses": [["address": "10.1.0.10/24", "gateway": "10.1.0.1"]]])
        r = try cniCall("ADD")
        XCTAssertEqual(r["stdout"]?["created"], false, "a repeated ADD created nothing")
        // DEL: the plan first (the attachment stays), then the release.
        r = try cniCall("DEL")
        XCTAssertEqual(r["stdout"]?["delegate"]?["master"], "eth9.100")
        XCTAssertNotNil(try attachment(d, "m1"))
        r = try cniCall("DEL", [("release", true)])
        XCTAssertEqual(r["exitCode"], 0)
        XCTAssertNil(try attachment(d, "m1"))
        r = try cniCall("DEL")
        XCTAssertEqual(r["stdout"]?["delegate"], .null, "nothing left to tear down")
        // The vlan delegate takes the VLAN id itself; an unknown delegate type is a configuration error, and the
        // address it allocated is given back.
        r = try cniCall("ADD", config: conf.setting("delegate", ["type": "vlan"]))
        XCTAssertEqual(r["stdout"]?["delegate"]?["vlanId"], 100)
        XCTAssertEqual(r["stdout"]?["delegate"]?["master"], "eth9")
        _ = try cniCall("DEL", [("release", true)])
        r = try cniCall("ADD", config: conf.setting("delegate", ["type": "tap"]))
        XCTAssertEqual(r["exitCode"], 7, r.serialized)
        XCTAssertNil(try attachment(d, "m1"))
    }

    /// berth-cni as the main plugin, run as a runtime runs it: when the delegate fails (here Debian's macvlan, on a
    /// namespace that does not exist) or cannot be found, the address it allocated is released again and the error
    /// names the delegate; DEL succeeds with nothing left.
    func testMainPluginGivesBackWhatAFailedDelegateTook() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/macvlan") else {
            XCTFail("/usr/lib/cni/macvlan is missing: install Debian's containernetworking-plugins (.ci/run does)")
            return
        }
        let d = try daemon("cni-main-fail")
        let conf: JSON = ["cniVersion": "1.0.0", "name": "vlan100", "type": "berth-cni", "network": "site", "socket": .string(d.socket),
                          "pool": "vlan100"]
        var e = env("ADD", "mf1")
        e["CNI_NETNS"] = "/var/run/netns/berth-no-such-ns"
        // No VLAN id on this host's copy: the delegate itself fails.
        _ = try d.request("POST", "/v1/networks/site/pools", ["name": "flat", "ranges": [["subnet": "10.2.0.0/24"]], "parent": "lo", "delegate": "macvlan"])
        var (rc, out, _) = try runTool(cni, [], env: e, stdin: conf.setting("pool", "flat").serialized)
        XCTAssertNotEqual(rc, 0, out)
        let err = try JSON.parse(out)
        XCTAssertTrue(err["msg"]?.string?.hasPrefix("macvlan: ") ?? false, out)
        XCTAssertNil(try attachment(d, "mf1"), "the address went back")
        // The delegate is not in CNI_PATH: code 5, nothing kept.
        e["CNI_PATH"] = "/nonexistent"
        (rc, out, _) = try runTool(cni, [], env: e, stdin: conf.setting("pool", "flat").serialized)
        XCTAssertEqual(rc, 5, out)
        XCTAssertEqual(try JSON.parse(out)["msg"], "delegate plugin \"macvlan\" is not in CNI_PATH")
        XCTAssertNil(try attachment(d, "mf1"))
        // DEL of it succeeds (nothing to tear down), twice.
        for _ in 0..<2 {
            (rc, out, _) = try runTool(cni, [], env: env("DEL", "mf1"), stdin: conf.serialized)
            XCTAssertEqual(rc, 0, out)
        }
    }

    /// The new user's scenario: an attachment made by hand for identity db/0 on node-2, then a StatefulApp db. The
    /// address is never listed for two containers: db-0 waits, saying why; once the hand-made attachment is
    /// deleted, the address moves to db-0 (an event).
    func testStatefulAppDoesNotShareALiveIdentitysAddress() throws {
        let pool: JSON = ["defaultPool": "vlan100", "pools": [Self.vlan100.removing("nodes")]]
        let d = try Daemon(plugins: [["name": "stateful", "path": .string(Paths.plugin("sched-stateful"))],
                                     ["name": "vlan", "path": .string(Paths.plugin("ipam-pool")), "config": pool]], tag: "dup")
        for n in ["node-1", "node-2"] {
            let (st, b) = try d.request("PUT", "/v1/nodes/\(n)", ["capacity": ["cpu": "4", "memory": "8Gi", "disk": "10Gi"]])
            XCTAssertEqual(st, 201, b.serialized)
        }
        var (st, b) = try d.request("POST", "/v1/networks/vlan/attachments", [
            "containerID": "db0-inc2", "node": "node-2", "identity": ["app": "db", "ordinal": 0, "releasePolicy": "immutable"]])
        XCTAssertEqual(st, 200, b.serialized)
        XCTAssertEqual(b["ips"]?[0]?["address"], "10.1.0.10/24")
        (st, b) = try d.request("PUT", "/v1/kinds/StatefulApp/db", ["spec": ["replicas": 1, "resources": ["cpu": "1"],
                                                                            "network": ["name": "vlan", "releasePolicy": "immutable"]]])
        XCTAssertEqual(st, 201, b.serialized)
        func holders() throws -> [String] {
            (try d.request("GET", "/v1/networks/vlan/attachments").1["attachments"]?.array ?? [])
                .filter { ($0["result"]?["ips"]?.array ?? []).contains { $0["address"] == "10.1.0.10/24" } }
                .compactMap { $0["containerID"]?.string }
        }
        func db0() throws -> JSON { try d.request("GET", "/v1/instances/StatefulApp/db/0").1 }
        var deadline = Date().addingTimeInterval(20)
        var inst = try db0()
        while Date() < deadline && !(inst["reason"]?.string?.contains("in use by container db0-inc2") ?? false) {
            usleep(50_000)
            inst = try db0()
        }
        XCTAssertEqual(inst["state"], "pending", inst.serialized)
        XCTAssertTrue(inst["reason"]?.string?.contains("10.1.0.10 is in use by container db0-inc2 (interface eth0, node node-2)") ?? false, inst.serialized)
        XCTAssertEqual(try holders(), ["db0-inc2"], "one holder of 10.1.0.10")
        // The old attachment is released: the address moves to db-0.
        (st, b) = try d.request("DELETE", "/v1/networks/vlan/attachments/db0-inc2/eth0")
        XCTAssertEqual(st, 200, b.serialized)
        deadline = Date().addingTimeInterval(20)
        while try Date() < deadline && db0()["state"] != "placed" { usleep(50_000) }
        inst = try db0()
        XCTAssertEqual(inst["state"], "placed", inst.serialized)
        XCTAssertEqual(inst["ips"], ["10.1.0.10"])
        XCTAssertEqual(inst["addresses"]?[0]?["mac"], "52:54:00:01:00:10")
        XCTAssertEqual(try holders(), [inst["containerID"]?.string ?? "?"])
        let moved = (try d.request("GET", "/v1/events?since=0&limit=10000").1["events"]?.array ?? []).filter { $0["type"] == "identity.moved" }
        XCTAssertEqual(moved.count, 1)
        XCTAssertEqual(moved.first?["data"]?["from"], "db0-inc2")
        XCTAssertEqual(moved.first?["data"]?["to"], inst["containerID"])
        _ = try d.request("DELETE", "/v1/kinds/StatefulApp/db")
    }

    /// berthd links a well-known path to its socket (api.link) while it runs, and leaves a live one alone.
    func testSocketLink() throws {
        let dir = tempDir("link")
        let link = dir + "/run/berthd.sock"
        let a = try daemon("link-a", extra: [("api", ["link": .string(link)])])
        XCTAssertEqual(try? FileManager.default.destinationOfSymbolicLink(atPath: link), a.socket)
        let r = try UnixHTTPConnection(path: link).request("GET", "/healthz")
        XCTAssertEqual(r.status, 200)
        let b = try daemon("link-b", extra: [("api", ["link": .string(link)])])
        XCTAssertEqual(try? FileManager.default.destinationOfSymbolicLink(atPath: link), a.socket, "a live berthd keeps its link")
        XCTAssertTrue(b.log().contains("another berthd is serving"), b.log())
        a.stop()
        XCTAssertNil(try? FileManager.default.destinationOfSymbolicLink(atPath: link), "removed at exit")
        b.stop()
    }
}
