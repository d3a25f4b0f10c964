// Workloads and the scheduler, through a real berthd: nodes, App and StatefulApp (the C plugin sched-stateful),
// fixed addresses from ipam-pool, node-local volumes from storage-local, node loss, kill -9 mid-rollout.
import BerthCheck
import BerthWire
import Foundation
import XCTest

final class SchedulerTests: XCTestCase {
    // MARK: helpers

    /// Directories made for plugin data outside the daemons' own directories; removed after each test.
    var scratch: [String] = []

    override func tearDown() {
        for d in scratch { removeTree(d) }  // unmounts the volumes storage-local loop-mounted there first
        scratch = []
        super.tearDown()
    }

    func scratchDir(_ tag: String) -> String {
        let d = tempDir(tag)
        scratch.append(d)
        return d
    }

    static let pool: JSON = [
        "defaultPool": "vlan100",
        "pools": [[
            "name": "vlan100",
            "ranges": [["subnet": "10.1.0.0/24", "start": "10.1.0.10", "end": "10.1.0.60", "gateway": "10.1.0.1"]],
            "reserved": ["10.1.0.10", "10.1.0.11", "10.1.0.12"],
            "macs": ["10.1.0.10": "52:54:00:01:00:10", "10.1.0.11": "52:54:00:01:00:11", "10.1.0.12": "52:54:00:01:00:12"],
            "vlan": 100,
        ]],
    ]

    func daemon(_ tag: String, storage: Bool = true, pool: JSON = SchedulerTests.pool, extra: [JSON] = []) throws -> Daemon {
        var plugins: [JSON] = [
            ["name": "stateful", "path": .string(Paths.plugin("sched-stateful"))],
            ["name": "vlan", "path": .string(Paths.plugin("ipam-pool")), "config": pool],
        ]
        if storage {
            let root = scratchDir("\(tag)-vols")
            plugins.append(["name": "local", "path": .string(Paths.plugin("storage-local")),
                            "config": ["root": .string(root), "capacityBytes": 1_073_741_824, "nodes": ["n1", "n2", "n3", "n4", "n5"]]])
        }
        return try Daemon(plugins: .array(plugins + extra), tag: tag)
    }

    /// 5 nodes in 3 zones: z1 = n1, n2; z2 = n3, n4; z3 = n5.
    func addNodes(_ d: Daemon, cpu: String = "4") throws {
        for (n, z) in [("n1", "z1"), ("n2", "z1"), ("n3", "z2"), ("n4", "z2"), ("n5", "z3")] {
            let (st, body) = try d.request("PUT", "/v1/nodes/\(n)", ["capacity": ["cpu": .string(cpu), "memory": "8Gi", "disk": "100Gi"],
                                                                      "labels": ["zone": .string(z)]])
            XCTAssertEqual(st, 201, body.serialized)
        }
    }

    func put(_ d: Daemon, _ kind: String, _ name: String, _ spec: JSON, expect: Int = 201) throws -> JSON {
        let (st, body) = try d.request("PUT", "/v1/kinds/\(kind)/\(name)", ["spec": spec])
        XCTAssertEqual(st, expect, body.serialized)
        return body
    }

    func instances(_ d: Daemon, _ q: String = "") throws -> [JSON] {
        let (st, body) = try d.request("GET", "/v1/instances\(q)")
        XCTAssertEqual(st, 200, body.serialized)
        return body["instances"]?.array ?? []
    }

    func instance(_ d: Daemon, _ kind: String, _ app: String, _ ord: Int) throws -> JSON {
        let (st, body) = try d.request("GET", "/v1/instances/\(kind)/\(app)/\(ord)")
        XCTAssertEqual(st, 200, body.serialized)
        return body
    }

    func waitState(_ d: Daemon, _ kind: String, _ app: String, _ ord: Int, _ state: String, timeout: Double = 20,
                   file: StaticString = #filePath, line: UInt = #line) throws -> JSON {
        try waitFor("\(kind)/\(app)/\(ord) \(state)", timeout: timeout, file: file, line: line, { try instance(d, kind, app, ord) }) {
            $0["state"]?.string == state
        }
    }

    func running(_ d: Daemon, _ kind: String, _ app: String, _ ord: Int) throws {
        let (st, body) = try d.request("POST", "/v1/instances/\(kind)/\(app)/\(ord)/running")
        XCTAssertEqual(st, 200, body.serialized)
    }

    func events(_ d: Daemon, type prefix: String = "instance.") throws -> [JSON] {
        let (_, body) = try d.request("GET", "/v1/events?since=0&limit=10000")
        return (body["events"]?.array ?? []).filter { $0["type"]?.string?.hasPrefix(prefix) ?? false }
    }

    func zone(_ node: String) -> String { ["n1": "z1", "n2": "z1", "n3": "z2", "n4": "z2", "n5": "z3"][node] ?? "?" }

    func mounts(under dir: String) -> Int {
        MountTable.mountPoints().filter { $0.contains(dir) }.count
    }

    /// Deletes apps and waits until their instances are gone (unmounting their volumes).
    func cleanup(_ d: Daemon, _ apps: [(String, String)]) throws {
        for (k, a) in apps { _ = try d.request("DELETE", "/v1/kinds/\(k)/\(a)") }
        try waitFor("instances gone", { .array(try instances(d)) }) { $0.array?.isEmpty ?? false }
    }

    // MARK: the must-show scenario

    func testStatefulAppZonesFixedAddressesVolumesAndNodeLoss() throws {
        let d = try daemon("sched-main")
        try addNodes(d)
        let (ks, kinds) = try d.request("GET", "/v1/kinds")
        XCTAssertEqual(ks, 200)
        XCTAssertEqual(kinds["kinds"]?.array?.compactMap { $0["kind"]?.string }, ["App", "StatefulApp"])

        _ = try put(d, "StatefulApp", "db", [
            "replicas": 3, "podManagementPolicy": "OrderedReady", "resources": ["cpu": "1", "memory": "1Gi"],
            "network": ["name": "vlan", "releasePolicy": "immutable"],
            "volumes": [["name": "data", "size": "16Mi", "local": true]],
        ])
        // Ordinals in order: 1 waits (and says so) until 0 runs, 2 until 1 runs.
        _ = try waitState(d, "StatefulApp", "db", 0, "placed")
        let waiting = try waitFor("db-1 waiting", { try instance(d, "StatefulApp", "db", 1) }) { $0["reason"]?.string?.contains("waiting for ordinal 0") ?? false }
        XCTAssertEqual(waiting["state"], "pending")
        XCTAssertEqual(try instance(d, "StatefulApp", "db", 2)["state"], "pending")
        try running(d, "StatefulApp", "db", 0)
        _ = try waitState(d, "StatefulApp", "db", 1, "placed")
        XCTAssertEqual(try instance(d, "StatefulApp", "db", 2)["state"], "pending")
        try running(d, "StatefulApp", "db", 1)
        _ = try waitState(d, "StatefulApp", "db", 2, "placed")
        try running(d, "StatefulApp", "db", 2)

        let placedEvents = try events(d, type: "instance.placed").filter { $0["data"]?["app"] == "db" }
        XCTAssertEqual(placedEvents.compactMap { $0["data"]?["ordinal"]?.int }, [0, 1, 2], "placed in ordinal order")
        // The event contract: kind, app, ordinal, node, state, ips (without prefix).
        let e0 = placedEvents[0]
        XCTAssertEqual(e0["subject"], "StatefulApp/db/0")
        XCTAssertEqual(Set(e0["data"]!.keys), ["kind", "app", "ordinal", "node", "state", "ips"])
        XCTAssertEqual(e0["data"]?["ips"], ["10.1.0.10"])

        var db = try (0..<3).map { try instance(d, "StatefulApp", "db", $0) }
        let nodes = db.map { $0["node"]!.string! }
        XCTAssertEqual(Set(nodes.map(zone)), ["z1", "z2", "z3"], "one instance per zone: \(nodes)")
        XCTAssertEqual(db.map { $0["ips"]!.array!.first!.string! }, ["10.1.0.10", "10.1.0.11", "10.1.0.12"], "fixed reserved addresses")
        XCTAssertEqual(db.map { $0["addresses"]?[0]?["mac"]?.string ?? "" }, ["52:54:00:01:00:10", "52:54:00:01:00:11", "52:54:00:01:00:12"])
        let volumeIDs = db.map { $0["volumes"]?[0]?["volumeId"]?.string ?? "" }
        XCTAssertEqual(Set(volumeIDs).count, 3, "each its own volume: \(volumeIDs)")
        for i in db { XCTAssertEqual(i["volumeNode"], i["node"], "the volume is local to the instance's node") }

        // Delete instance 1: it comes back on the same node with the same address, MAC and volume.
        let before = db[1]
        let (ds, _) = try d.request("DELETE", "/v1/instances/StatefulApp/db/1")
        XCTAssertEqual(ds, 200)
        let back = try waitFor("db-1 back", { try instance(d, "StatefulApp", "db", 1) }) { $0["state"] == "placed" && $0["incarnation"] == 2 }
        XCTAssertEqual(back["node"], before["node"])
        XCTAssertEqual(back["ips"], before["ips"])
        XCTAssertEqual(back["addresses"]?[0]?["mac"], before["addresses"]?[0]?["mac"])
        XCTAssertEqual(back["volumes"]?[0]?["volumeId"], before["volumes"]?[0]?["volumeId"])
        XCTAssertEqual(back["previousNode"], before["node"])
        let kinds1 = try events(d).filter { $0["subject"] == "StatefulApp/db/1" }.map { $0["type"]!.string! }
        XCTAssertEqual(Array(kinds1.suffix(4)), ["instance.terminating", "instance.gone", "instance.pending", "instance.placed"])
        try running(d, "StatefulApp", "db", 1)
        db[1] = back
        let x = back["node"]!.string!
        let sibling = ["n1": "n2", "n2": "n1", "n3": "n4", "n4": "n3"][x]
        XCTAssertNotNil(sibling, "db-1 is in a zone with two nodes (\(x))")

        // Two apps on the same node without node-local volumes: one may move, one never migrates.
        let sel: JSON = ["zone": .string(zone(x))]
        _ = try put(d, "StatefulApp", "web", ["replicas": 1, "podManagementPolicy": "Parallel", "resources": ["cpu": "500m"], "nodeSelector": sel,
                                              "network": ["name": "vlan", "releasePolicy": "immutable"]])
        _ = try put(d, "StatefulApp", "cache", ["replicas": 1, "neverMigrate": true, "resources": ["cpu": "500m"], "nodeSelector": sel,
                                                "network": ["name": "vlan", "releasePolicy": "immutable"]])
        let web = try waitState(d, "StatefulApp", "web", 0, "placed")
        let cache = try waitState(d, "StatefulApp", "cache", 0, "placed")
        XCTAssertEqual(web["node"]?.string, x, "bin-packing puts web on the fuller node of the zone")
        XCTAssertEqual(cache["node"]?.string, x)

        // The node is lost.
        let (dn, down) = try d.request("POST", "/v1/nodes/\(x)/down")
        XCTAssertEqual(dn, 200, down.serialized)
        XCTAssertEqual(down["evicted"], 3)
        let stuck = try waitFor("db-1 pending with its reason", { try instance(d, "StatefulApp", "db", 1) }) {
            $0["state"] == "pending" && ($0["reason"]?.string?.contains("local volume lives on node \(x), which is down") ?? false)
        }
        XCTAssertTrue(stuck["reason"]!.string!.contains("1 down"), stuck.serialized)
        let moved = try waitFor("web-0 moved", { try instance(d, "StatefulApp", "web", 0) }) { $0["state"] == "placed" && $0["node"]?.string == sibling }
        XCTAssertEqual(moved["ips"], web["ips"], "immutable: the address follows the instance to the new node")
        XCTAssertEqual(moved["addresses"]?[0]?["mac"], web["addresses"]?[0]?["mac"])
        let pinned = try waitFor("cache-0 pending", { try instance(d, "StatefulApp", "cache", 0) }) {
            $0["state"] == "pending" && ($0["reason"]?.string?.contains("neverMigrate") ?? false)
        }
        XCTAssertTrue(pinned["reason"]!.string!.contains("\(x), which is down"), pinned.serialized)
        // The others did not move.
        for o in [0, 2] { XCTAssertEqual(try instance(d, "StatefulApp", "db", o)["node"], db[o]["node"]) }

        // The node comes back: the waiting instances return to it, with their addresses and volume.
        let (up, _) = try d.request("POST", "/v1/nodes/\(x)/up")
        XCTAssertEqual(up, 200)
        let again = try waitFor("db-1 back on \(x)", { try instance(d, "StatefulApp", "db", 1) }) { $0["state"] == "placed" }
        XCTAssertEqual(again["node"]?.string, x)
        XCTAssertEqual(again["ips"], before["ips"])
        XCTAssertEqual(again["volumes"]?[0]?["volumeId"], before["volumes"]?[0]?["volumeId"])
        let cacheBack = try waitState(d, "StatefulApp", "cache", 0, "placed")
        XCTAssertEqual(cacheBack["node"]?.string, x)
        XCTAssertEqual(cacheBack["ips"], cache["ips"])

        // Discovery's view: every instance with its node and addresses.
        let (ns, nodeList) = try d.request("GET", "/v1/nodes")
        XCTAssertEqual(ns, 200)
        XCTAssertEqual(nodeList["nodes"]?.array?.first { $0["name"]?.string == x }?["allocated"]?["instances"], 2, "db-1 and cache-0; web stays where it moved")

        let stateDir = d.dir + "/state"
        XCTAssertGreaterThan(mounts(under: stateDir + "/instances"), 0)
        try cleanup(d, [("StatefulApp", "db"), ("StatefulApp", "web"), ("StatefulApp", "cache")])
        XCTAssertEqual(mounts(under: stateDir), 0, "volumes unpublished and unstaged")
        // Reserved addresses are reserved again; the app's deletion released its identities.
        let (_, pools) = try d.request("GET", "/v1/networks/vlan/pools")
        XCTAssertEqual(pools["pools"]?[0]?["active"], 0)
        XCTAssertEqual(pools["pools"]?[0]?["held"], 0)
    }

    // MARK: restart mid-rollout

    func testKillDuringRolloutPlacesNothingTwice() throws {
        let d = try daemon("sched-kill", storage: false, pool: ["defaultPool": "big", "pools": [["name": "big", "ranges": [["subnet": "10.9.0.0/16"]]]]])
        for i in 1...20 {
            let (st, _) = try d.request("PUT", "/v1/nodes/k\(i)", ["capacity": ["cpu": "64", "memory": "256Gi"], "labels": ["zone": .string("z\(i % 3)")]])
            XCTAssertEqual(st, 201)
        }
        // An ordered rollout, stopped between ordinals: 0 and 1 running, 2 placed, 3 waiting.
        _ = try put(d, "StatefulApp", "ord", ["replicas": 4, "resources": ["cpu": "1"], "network": ["name": "vlan", "releasePolicy": "immutable"]])
        for o in 0..<2 {
            _ = try waitState(d, "StatefulApp", "ord", o, "placed")
            try running(d, "StatefulApp", "ord", o)
        }
        let ord2 = try waitState(d, "StatefulApp", "ord", 2, "placed")
        // A large parallel rollout with a network ADD per instance, killed while it is being placed.
        let n = 1500
        _ = try put(d, "App", "bulk", ["replicas": .number(Double(n)), "resources": ["cpu": "100m"], "network": ["name": "vlan"]])
        let seen = try waitFor("bulk placements under way", timeout: 30, { try d.request("GET", "/v1/kinds/App/bulk").1 }) {
            ($0["status"]?["placed"]?.int ?? 0) > 0
        }
        d.kill9()
        try d.start()
        let (_, after) = try d.request("GET", "/v1/kinds/App/bulk")
        let placedAtRestart = after["status"]?["placed"]?.int ?? -1
        print("bulk: \(seen["status"]?["placed"]?.int ?? 0) placed when killed, \(placedAtRestart) of \(n) after the restart")
        XCTAssertLessThan(placedAtRestart, n, "the kill landed in the middle of the rollout")

        // The ordered rollout resumes where it was: nothing re-placed.
        let ord2After = try instance(d, "StatefulApp", "ord", 2)
        XCTAssertEqual(ord2After["state"], "placed")
        XCTAssertEqual(ord2After["incarnation"], ord2["incarnation"])
        XCTAssertEqual(ord2After["node"], ord2["node"])
        XCTAssertEqual(try instance(d, "StatefulApp", "ord", 3)["state"], "pending")
        try running(d, "StatefulApp", "ord", 2)
        _ = try waitState(d, "StatefulApp", "ord", 3, "placed")

        try waitFor("bulk placed", timeout: 60, { try d.request("GET", "/v1/kinds/App/bulk").1 }) { ($0["status"]?["placed"]?.int ?? 0) == n }
        // Exactly one placement per instance, one attachment per instance, no address twice.
        var placements: [String: Int] = [:]
        for e in try events(d, type: "instance.placed") { placements[e["subject"]!.string!, default: 0] += 1 }
        XCTAssertEqual(placements.count, n + 4)
        XCTAssertEqual(placements.filter { $0.value != 1 }.map { $0.key }, [], "placed twice")
        let list = try instances(d, "?kind=App&app=bulk")
        XCTAssertEqual(list.count, n)
        XCTAssertTrue(list.allSatisfy { $0["incarnation"] == 1 })
        XCTAssertEqual(Set(list.compactMap { $0["ips"]?[0]?.string }).count, n)
        let (_, atts) = try d.request("GET", "/v1/networks/vlan/attachments")
        XCTAssertEqual(atts["attachments"]?.array?.count, n + 4)
        let (_, pools) = try d.request("GET", "/v1/networks/vlan/pools")
        XCTAssertEqual(pools["pools"]?[0]?["active"]?.int, n + 4)
        // Node accounting was rebuilt from the store: 0.1 cpu per bulk instance, 1 per ord instance.
        let (_, nodes) = try d.request("GET", "/v1/nodes")
        let cpu = (nodes["nodes"]?.array ?? []).compactMap { $0["allocated"]?["cpu"]?.int }.reduce(0, +)
        XCTAssertEqual(cpu, n * 100 + 4 * 1000)
    }

    // MARK: App, resources, ports, constraints, scaling, the CLI

    func testAppResourcesPortsConstraintsAndCLI() throws {
        let d = try daemon("sched-app", storage: false)
        let berth = Paths.bin + "/berth"
        for (n, z) in [("a1", "z1"), ("a2", "z2")] {
            let (rc, out, err) = try runTool(berth, ["nodes", "add", n, "--cpu", "2", "--memory", "4Gi", "--label", "zone=\(z)", "--label", "disk=ssd", "--socket", d.socket])
            XCTAssertEqual(rc, 0, out + err)
        }
        let file = d.dir + "/web.json"
        try JSON.array([["kind": "App", "name": "web", "spec": ["replicas": 3, "resources": ["cpu": "1", "memory": "1Gi"], "ports": [8080]]]])
            .pretty.write(toFile: file, atomically: true, encoding: .utf8)
        var (rc, out, err) = try runTool(berth, ["apply", "-f", file, "--socket", d.socket])
        XCTAssertEqual(rc, 0, out + err)
        // Port 8080 once per node: two placed, the third says why.
        let third = try waitFor("web-2 pending with a reason", { try instance(d, "App", "web", 2) }) { $0["reason"]?.string?.contains("host ports in use") ?? false }
        XCTAssertEqual(third["state"], "pending")
        XCTAssertEqual(Set([try instance(d, "App", "web", 0), try instance(d, "App", "web", 1)].map { $0["node"]!.string! }), ["a1", "a2"])
        (rc, out, err) = try runTool(berth, ["instances", "--app", "web", "--socket", d.socket])
        XCTAssertEqual(rc, 0, err)
        XCTAssertTrue(out.contains("web-2") && out.contains("host ports in use"), out)
        (rc, out, err) = try runTool(berth, ["get", "App", "--socket", d.socket])
        XCTAssertTrue(out.contains("web") && out.contains("3"), out)

        // A new node unblocks it.
        (rc, out, err) = try runTool(berth, ["nodes", "add", "a3", "--cpu", "2", "--memory", "4Gi", "--label", "zone=z3", "--socket", d.socket])
        XCTAssertEqual(rc, 0, err)
        XCTAssertEqual(try waitState(d, "App", "web", 2, "placed")["node"], "a3")

        // Constraints and bin-packing: a memory-heavy app goes to ssd nodes outside z1, packed on one.
        _ = try put(d, "App", "batch", ["replicas": 2, "resources": ["cpu": "200m", "memory": "512Mi"],
                                        "nodeSelector": ["disk": "ssd"], "constraints": [["key": "zone", "operator": "NotIn", "values": ["z1"]]]])
        for o in 0..<2 { XCTAssertEqual(try waitState(d, "App", "batch", o, "placed")["node"], "a2") }
        // Insufficient cpu is reported per node; a scale-down ends the highest ordinals.
        _ = try put(d, "App", "big", ["replicas": 1, "resources": ["cpu": "3"]])
        let big = try waitFor("big pending", { try instance(d, "App", "big", 0) }) { !($0["reason"]?.string ?? "").isEmpty }
        XCTAssertEqual(big["reason"], "0/3 nodes are available: 3 insufficient cpu")
        _ = try put(d, "App", "batch", ["replicas": 1, "resources": ["cpu": "200m", "memory": "512Mi"],
                                        "nodeSelector": ["disk": "ssd"], "constraints": [["key": "zone", "operator": "NotIn", "values": ["z1"]]]], expect: 200)
        try waitFor("batch-1 gone", { .array(try instances(d, "?app=batch")) }) { $0.array?.count == 1 }
        let types = try events(d).filter { $0["subject"] == "App/batch/1" }.map { $0["type"]!.string! }
        XCTAssertEqual(types, ["instance.pending", "instance.placed", "instance.terminating", "instance.gone"])

        // Drain: instances move off the node; nothing new lands there.
        let onA3 = try instances(d, "?node=a3").count
        XCTAssertGreaterThan(onA3, 0)
        (rc, out, err) = try runTool(berth, ["nodes", "drain", "a3", "--socket", d.socket])
        XCTAssertEqual(rc, 0, err)
        XCTAssertTrue(out.contains("draining"), out)
        try waitFor("a3 empty", { .array(try instances(d, "?node=a3")) }) { $0.array?.isEmpty ?? false }
        (rc, out, err) = try runTool(berth, ["nodes", "list", "--socket", d.socket])
        XCTAssertTrue(out.contains("a3") && out.contains("draining"), out)
        (rc, out, err) = try runTool(berth, ["delete", "App", "web", "--socket", d.socket])
        XCTAssertEqual(rc, 0, err)
        try waitFor("web gone", { .array(try instances(d, "?app=web")) }) { $0.array?.isEmpty ?? false }
    }

    // MARK: kinds, validation, errors

    func testKindsValidationAndErrors() throws {
        let d = try daemon("sched-api", storage: false)
        try addNodes(d)
        var (st, body) = try d.request("PUT", "/v1/kinds/Nope/x", ["spec": ["replicas": 1]])
        XCTAssertEqual(st, 404)
        XCTAssertTrue(body["error"]!.string!.contains("known kinds: App, StatefulApp"), body.serialized)
        (st, body) = try d.request("PUT", "/v1/kinds/StatefulApp/db", ["spec": ["replicas": "three"]])
        XCTAssertEqual(st, 400)
        XCTAssertTrue(body["error"]!.string!.contains("spec.replicas: expected integer, got string"), body.serialized)
        (st, body) = try d.request("PUT", "/v1/kinds/StatefulApp/db", ["spec": ["replicas": 1, "podManagementPolicy": "Sometimes"]])
        XCTAssertEqual(st, 400)
        XCTAssertTrue(body["error"]!.string!.contains("spec.podManagementPolicy"), body.serialized)
        (st, body) = try d.request("PUT", "/v1/kinds/StatefulApp/db", ["spec": ["replicas": 1, "replicaz": 2]])
        XCTAssertEqual(st, 400)
        XCTAssertTrue(body["error"]!.string!.contains("spec.replicaz: unknown key"), body.serialized)
        (st, body) = try d.request("PUT", "/v1/kinds/App/web", ["spec": ["replicas": 1, "resources": ["cpu": "lots"]]])
        XCTAssertEqual(st, 400)
        XCTAssertTrue(body["error"]!.string!.contains("spec.resources.cpu"), body.serialized)
        (st, body) = try d.request("PUT", "/v1/kinds/App/web", ["spec": ["replicas": 1, "network": ["name": "nonet"]]])
        XCTAssertEqual(st, 400)
        XCTAssertTrue(body["error"]!.string!.contains("no loaded network plugin named \"nonet\" (have: vlan)"), body.serialized)
        (st, body) = try d.request("PUT", "/v1/kinds/App/Bad_Name", ["spec": ["replicas": 1]])
        XCTAssertEqual(st, 400)
        (st, body) = try d.request("PUT", "/v1/kinds/App/web", ["spec": ["replicas": 1], "kind": "StatefulApp"])
        XCTAssertEqual(st, 400)
        // Nothing was stored by the rejected requests.
        XCTAssertEqual(try events(d, type: "app.").count, 0)
        XCTAssertEqual(try instances(d).count, 0)

        _ = try put(d, "App", "web", ["replicas": 1])
        (st, body) = try d.request("PUT", "/v1/kinds/StatefulApp/web", ["spec": ["replicas": 1]])
        XCTAssertEqual(st, 409, "names are unique across kinds")
        (st, body) = try d.request("GET", "/v1/kinds/App/web")
        XCTAssertEqual(st, 200)
        XCTAssertEqual(body["owner"], "berthd (built-in)")
        (st, body) = try d.request("GET", "/v1/kinds/App/nothing")
        XCTAssertEqual(st, 404)
        (st, body) = try d.request("POST", "/v1/instances/App/web/7/running")
        XCTAssertEqual(st, 404)
        (st, body) = try d.request("POST", "/v1/instances/App/web/x/running")
        XCTAssertEqual(st, 400)
        (st, body) = try d.request("PUT", "/v1/nodes/n1", ["capacity": ["cpu": "1", "gpus": 2]])
        XCTAssertEqual(st, 400)
        XCTAssertTrue(body["error"]!.string!.contains("capacity.gpus"), body.serialized)
        (st, body) = try d.request("DELETE", "/v1/nodes/nx")
        XCTAssertEqual(st, 404)
        _ = try waitState(d, "App", "web", 0, "placed")
        let node = try instance(d, "App", "web", 0)["node"]!.string!
        (st, body) = try d.request("DELETE", "/v1/nodes/\(node)")
        XCTAssertEqual(st, 409, "a node with instances cannot be removed")

        // The plugin passes its own conformance check.
        let (rc, out, _) = try runTool(Paths.bin + "/berth", ["plugin", "check", Paths.plugin("sched-stateful")])
        XCTAssertEqual(rc, 0, out)
        XCTAssertTrue(out.contains("StatefulApp") || out.contains("scheduler"), out)
    }

    // MARK: a failure while wiring gives everything back

    func testWiringFailureReleasesWhatWasTaken() throws {
        // A second storage plugin that serves node n4 only.
        let picky: JSON = ["name": "picky", "path": .string(Paths.plugin("storage-local")),
                           "config": ["root": .string(scratchDir("sched-wire-picky")), "capacityBytes": 1_073_741_824, "nodes": ["n4"]]]
        let d = try daemon("sched-wire", extra: [picky])
        try addNodes(d)
        // The volume is larger than the storage plugin's capacity: create fails after the address was taken.
        _ = try put(d, "StatefulApp", "vol", ["replicas": 1, "network": ["name": "vlan", "releasePolicy": "immutable"],
                                              "volumes": [["name": "data", "size": "4Gi", "local": true, "storage": "local"]]])
        let failed = try waitFor("vol-0 pending with the wiring error", { try instance(d, "StatefulApp", "vol", 0) }) {
            $0["reason"]?.string?.contains("failed") ?? false
        }
        XCTAssertEqual(failed["state"], "pending")
        XCTAssertTrue(failed["reason"]!.string!.hasPrefix("placing on node"), failed.serialized)
        let (_, atts) = try d.request("GET", "/v1/networks/vlan/attachments")
        XCTAssertEqual(atts["attachments"]?.array?.count, 0, "the address was given back")
        let (_, pools) = try d.request("GET", "/v1/networks/vlan/pools")
        XCTAssertEqual(pools["pools"]?[0]?["active"], 0)
        XCTAssertEqual(pools["pools"]?[0]?["reserved"], 3)
        XCTAssertEqual(try events(d, type: "network.attached").count, 0)
        XCTAssertEqual(try events(d, type: "instance.placed").count, 0)
        // Fixed, it is placed.
        _ = try put(d, "StatefulApp", "vol", ["replicas": 1, "network": ["name": "vlan", "releasePolicy": "immutable"],
                                              "volumes": [["name": "data", "size": "8Mi", "local": true, "storage": "local"]]], expect: 200)
        let ok = try waitState(d, "StatefulApp", "vol", 0, "placed")
        XCTAssertEqual(ok["ips"], ["10.1.0.10"])
        XCTAssertEqual(ok["reason"], .null)

        // Wiring fails on every node but one: each failed node is ranked last on the next attempt, until it lands.
        _ = try put(d, "App", "picky", ["replicas": 1, "volumes": [["name": "data", "size": "8Mi", "local": true, "storage": "picky"]]])
        let landed = try waitState(d, "App", "picky", 0, "placed", timeout: 30)
        XCTAssertEqual(landed["node"], "n4")
        let reasons = try events(d, type: "instance.pending").filter { $0["subject"] == "App/picky/0" }.compactMap { $0["data"]?["reason"]?.string }
        XCTAssertTrue(reasons.contains { $0.hasPrefix("placing on node") && $0.contains("failed") }, "\(reasons)")
        XCTAssertEqual(Set(reasons.compactMap { $0.split(separator: " ").dropFirst(3).first }).count, reasons.count, "no node tried twice: \(reasons)")
        try cleanup(d, [("StatefulApp", "vol"), ("App", "picky")])
    }
}
