// The network kind end to end: berthd + the ipam-pool plugin + berth-cni, with Debian's real CNI `bridge`
// plugin in network namespaces, berth-cni's error contract, and durability under kill -9.
import BerthWire
import Foundation
import XCTest

let poolNet1: JSON = ["name": "p1", "ranges": [["subnet": "10.99.0.0/24"]], "routes": [["dst": "0.0.0.0/0"]]]

func netDaemon(_ tag: String, pools: [JSON] = [poolNet1]) throws -> Daemon {
    try Daemon(plugins: [["name": "net1", "path": .string(Paths.plugin("ipam-pool")), "config": ["pools": .array(pools)]]], tag: tag)
}

final class NetworkTests: XCTestCase {
    var cni: String { Paths.bin + "/berth-cni" }

    func cniEnv(_ cmd: String, _ cid: String = "c1", netns: String = "/var/run/netns/none", extra: [String: String] = [:]) -> [String: String] {
        var e = ["CNI_COMMAND": cmd, "CNI_CONTAINERID": cid, "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"]
        for (k, v) in extra { e[k] = v }
        return e
    }

    func conf(_ d: Daemon, version: String = "1.0.0", type: String = "berth-cni") -> JSON {
        ["cniVersion": .string(version), "name": "berthnet", "type": .string(type),
         "ipam": ["type": "berth-cni", "socket": .string(d.socket), "network": "net1"]]
    }

    func testAttachmentsThroughTheAPI() throws {
        let d = try netDaemon("attach")
        var (st, r) = try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "c1", "ifname": "eth0", "node": "n1"])
        XCTAssertEqual(st, 200, r.serialized)
        let addr = r["ips"]?[0]?["address"]?.string
        XCTAssertEqual(addr, "10.99.0.2/24")
        XCTAssertEqual(r["ips"]?[0]?["mac"], "0a:58:0a:63:00:02")
        // Idempotent ADD.
        let (st2, r2) = try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "c1", "ifname": "eth0", "node": "n1"])
        XCTAssertEqual(st2, 200)
        XCTAssertEqual(r2, r)
        (st, r) = try d.request("GET", "/v1/networks/net1/attachments/c1/eth0")
        XCTAssertEqual(st, 200)
        (st, r) = try d.request("GET", "/v1/networks/net1/attachments/nope/eth0")
        XCTAssertEqual(st, 404)
        (st, r) = try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "c2", "ips": ["10.99.0.2"]])
        XCTAssertEqual(st, 409, "a requested address that is taken is refused: \(r.serialized)")
        (st, r) = try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "c2", "bogus": true])
        XCTAssertEqual(st, 400)
        (st, r) = try d.request("DELETE", "/v1/networks/net1/pools/p1")
        XCTAssertEqual(st, 409, "a pool with active addresses cannot be deleted: \(r.serialized)")
        (st, r) = try d.request("DELETE", "/v1/networks/net1/attachments/c1/eth0")
        XCTAssertEqual(st, 200)
        (st, r) = try d.request("DELETE", "/v1/networks/net1/attachments/c1/eth0")
        XCTAssertEqual(st, 200, "DEL twice succeeds")
        (st, r) = try d.request("GET", "/v1/networks/net1/capacity")
        XCTAssertEqual(r["active"], 0)
        // The CLI lists pools.
        let (rc, out, _) = try runTool(Paths.bin + "/berth", ["pools", "list", "--network", "net1", "--socket", d.socket])
        XCTAssertEqual(rc, 0)
        XCTAssertTrue(out.contains("p1"), out)
        let evs = try d.request("GET", "/v1/events?since=0").1["events"]!.array!.map { $0["type"]!.string! }
        XCTAssertTrue(evs.contains("network.attached") && evs.contains("network.detached"), "\(evs)")
    }

    /// Batch ADD: one round trip and one commit; each item succeeds or fails alone; a malformed batch is refused whole.
    func testBatchAttachments() throws {
        let d = try netDaemon("batch", pools: [["name": "small", "ranges": [["subnet": "10.97.0.0/29"]]]])  // 5 usable: .2-.6
        let items: [JSON] = [
            ["containerID": "b1", "node": "n1"],
            ["containerID": "b2", "ips": ["10.97.0.2"]],   // taken by b1 in the same batch: fails alone
            ["containerID": "b3", "ifname": "net1"],
            ["containerID": "b1", "node": "n1"],           // a repeat of b1: idempotent, same answer
        ]
        var (st, r) = try d.request("POST", "/v1/networks/net1/attachments/batch", ["attachments": .array(items)])
        XCTAssertEqual(st, 200, r.serialized)
        XCTAssertEqual(r["succeeded"], 3)
        XCTAssertEqual(r["failed"], 1)
        let res = try XCTUnwrap(r["results"]?.array)
        XCTAssertEqual(res.count, 4)
        XCTAssertEqual(res[0]["result"]?["ips"]?[0]?["address"], "10.97.0.2/29")
        XCTAssertEqual(res[1]["status"], 409, res[1].serialized)
        XCTAssertEqual(res[1]["details"]?["status"], "ALREADY_EXISTS")
        XCTAssertNil(res[1]["result"])
        XCTAssertEqual(res[2]["result"]?["ips"]?[0]?["address"], "10.97.0.3/29")
        XCTAssertEqual(res[3]["result"], res[0]["result"])
        // The failed item left nothing behind; the others are ordinary attachments.
        (st, r) = try d.request("GET", "/v1/networks/net1/attachments/b2/eth0")
        XCTAssertEqual(st, 404)
        (st, r) = try d.request("GET", "/v1/networks/net1/attachments/b3/net1")
        XCTAssertEqual(st, 200, r.serialized)
        (st, r) = try d.request("GET", "/v1/networks/net1/capacity")
        XCTAssertEqual(r["active"], 2)

        // Exhaustion in the middle of a batch: the items before it commit, the rest fail with RESOURCE_EXHAUSTED.
        (st, r) = try d.request("POST", "/v1/networks/net1/attachments/batch",
                                ["attachments": .array((0..<5).map { ["containerID": .string("x\($0)")] })])
        XCTAssertEqual(st, 200, r.serialized)
        XCTAssertEqual(r["succeeded"], 3)
        XCTAssertEqual(r["results"]?[3]?["details"]?["status"], "RESOURCE_EXHAUSTED", r.serialized)
        XCTAssertEqual(r["results"]?[4]?["status"], 507)
        (st, r) = try d.request("GET", "/v1/networks/net1/capacity")
        XCTAssertEqual(r["active"], 5)
        XCTAssertEqual(r["free"], 0)

        // Refused whole, before anything runs: an unknown field in one item, a non-object item, no array, too many.
        for (body, want) in [
            (["attachments": [["containerID": "y1"], ["containerID": "y2", "bogus": 1]]] as JSON, "attachments[1]: unknown field \"bogus\""),
            (["attachments": ["y3"]], "attachments[0] must be an object"),
            (["attachments": ["containerID": "y4"]], "\"attachments\" must be an array"),
            (["attachments": [], "extra": true], "unknown field \"extra\""),
        ] {
            (st, r) = try d.request("POST", "/v1/networks/net1/attachments/batch", body)
            XCTAssertEqual(st, 400, r.serialized)
            XCTAssertTrue(r["error"]?.string?.contains(want) ?? false, "\(r.serialized) should say \(want)")
        }
        let many = JSON.array((0...1024).map { ["containerID": .string("z\($0)")] })
        (st, r) = try d.request("POST", "/v1/networks/net1/attachments/batch", ["attachments": many])
        XCTAssertEqual(st, 413, r.serialized)
        XCTAssertTrue(r["error"]?.string?.contains("at most 1024") ?? false, r.serialized)
        (st, r) = try d.rawRequest("POST", "/v1/networks/net1/attachments/batch", Array("{\"attachments\": [".utf8))
        XCTAssertEqual(st, 400)
        (st, r) = try d.request("POST", "/v1/networks/nonet/attachments/batch", ["attachments": []])
        XCTAssertEqual(st, 404, r.serialized)
        // Nothing refused above left a trace.
        (st, r) = try d.request("GET", "/v1/networks/net1/attachments")
        XCTAssertEqual(r["attachments"]?.array?.count, 5, r.serialized)

        // The CLI: a table, one row per item, and exit 1 when any item failed (the pool is full: both fail here,
        // except b1, which is a repeat).
        let f = d.dir + "/batch.json"
        try #"{"attachments": [{"containerID": "b1", "node": "n1"}, {"containerID": "cli-1"}]}"#.write(toFile: f, atomically: true, encoding: .utf8)
        let (rc, out, err) = try runTool(Paths.bin + "/berth", ["attachments", "batch", "-f", f, "--network", "net1", "--socket", d.socket])
        XCTAssertEqual(rc, 1, out + err)
        XCTAssertTrue(out.contains("b1") && out.contains("10.97.0.2/29"), out)
        XCTAssertTrue(out.contains("cli-1") && out.contains("error 507"), out)
        XCTAssertTrue(out.contains("1 succeeded, 1 failed"), out)
    }

    /// A batch of new attachments takes one add_batch call (ABI 1.1), in process and with the plugin in its own
    /// process; a batch that cannot (an item fails) is answered item by item, and /metrics tells the two apart.
    func testBatchTakesOneAddBatchCall() throws {
        for isolation in ["in-process", "process"] {
            let d = try Daemon(plugins: [["name": "net1", "path": .string(Paths.plugin("ipam-pool")), "isolation": .string(isolation),
                                          "config": ["pools": [["name": "p", "ranges": [["subnet": "10.96.0.0/24"]]]]]]], tag: "one-\(isolation)")
            func batches() throws -> (Int, Int) {
                let m = try UnixHTTPConnection(path: d.socket).request("GET", "/metrics").text
                func value(_ path: String) -> Int {
                    let line = m.split(separator: "\n").first { $0.hasPrefix("berth_network_batches_total{network=\"net1\",path=\"\(path)\"}") }
                    return Int(line?.split(separator: " ").last ?? "") ?? -1
                }
                return (value("add_batch"), value("item_by_item"))
            }
            XCTAssertEqual(try batches().0, -1, "\(isolation): no batch yet, no line")
            var (st, r) = try d.request("POST", "/v1/networks/net1/attachments/batch", ["attachments": []])
            XCTAssertEqual(st, 200, r.serialized)
            XCTAssertEqual(try batches().0, -1, "\(isolation): an empty batch is not counted")
            (st, r) = try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "before"])
            XCTAssertEqual(st, 200, r.serialized)
            let items = JSON.array((0..<100).map { ["containerID": .string("c\($0)"), "node": .string("n\($0 % 3)")] } + [["containerID": "before"]])
            (st, r) = try d.request("POST", "/v1/networks/net1/attachments/batch", ["attachments": items])
            XCTAssertEqual(st, 200, r.serialized)
            XCTAssertEqual(r["succeeded"], 101, isolation)
            let res = try XCTUnwrap(r["results"]?.array)
            let got = (0..<100).map { res[$0]["result"]?["ips"]?[0]?["address"]?.string ?? "" }
            XCTAssertEqual(Set(got).count, 100, "\(isolation): every item its own address: \(got)")
            // ipam-pool's per-node blocks (/26): each node allocates in the block it claimed, no block serves two nodes.
            var nodeOfBlock: [Int: Int] = [:]
            for (i, a) in got.enumerated() {
                guard a.hasPrefix("10.96.0."), let last = Int(a.dropFirst(8).split(separator: "/")[0]) else { XCTFail("\(isolation) item \(i): \(a)"); continue }
                if let n = nodeOfBlock[last / 64] { XCTAssertEqual(n, i % 3, "\(isolation) item \(i): \(a) is in node n\(n)'s block") }
                nodeOfBlock[last / 64] = i % 3
            }
            XCTAssertEqual(res[100]["result"]?["ips"]?[0]?["address"], "10.96.0.2/24", "the recorded attachment answers from its record")
            XCTAssertEqual(try batches().0, 1, "\(isolation): one add_batch call")
            // Ordinary attachments afterwards: listed, with their events, idempotent one at a time, and DEL works.
            (st, r) = try d.request("GET", "/v1/networks/net1/attachments")
            XCTAssertEqual(r["attachments"]?.array?.count, 101)
            let evs = try d.request("GET", "/v1/events?since=0").1["events"]!.array!.filter { $0["type"] == "network.attached" }
            XCTAssertEqual(evs.count, 101, isolation)
            XCTAssertEqual(evs.last?["subject"], "net1/c99/eth0")
            (st, r) = try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "c42", "node": "n0"])
            XCTAssertEqual(r["ips"]?[0]?["address"]?.string, got[42])
            (st, r) = try d.request("GET", "/v1/networks/net1/capacity?node=n1")
            XCTAssertEqual(st, 200, r.serialized)
            (st, _) = try d.request("DELETE", "/v1/networks/net1/attachments/c42/eth0")
            XCTAssertEqual(st, 200)
            // A batch whose tail is refused by the pool: the add_batch call fails, the items are answered one by one.
            (st, r) = try d.request("POST", "/v1/networks/net1/attachments/batch",
                                    ["attachments": .array((0..<160).map { ["containerID": .string("t\($0)")] })])
            XCTAssertEqual(st, 200, r.serialized)
            XCTAssertEqual(r["succeeded"], 153, "\(isolation): 253 usable addresses, 100 in use")
            XCTAssertEqual(r["results"]?[153]?["details"]?["status"], "RESOURCE_EXHAUSTED")
            XCTAssertEqual(try batches().0, 1)
            XCTAssertEqual(try batches().1, 1, "\(isolation): one batch item by item")
            (st, r) = try d.request("GET", "/v1/networks/net1/capacity")
            XCTAssertEqual(r["free"], 0, r.serialized)
            XCTAssertEqual(r["active"], 253)
        }
    }

    /// A plugin whose add_batch answers wrongly (one result short; a failed item reported inside an OK answer) does
    /// not get its answer recorded: the host warns, undoes the call and adds the items one at a time, so every item
    /// still gets its own, correct answer (the kit's pool holds 8 addresses: 10 items leave 2 RESOURCE_EXHAUSTED).
    func testMisbehavingAddBatchFallsBackItemByItem() throws {
        for (fixture, count, warning) in [("batch_short", 5, "returned 4 results for 5 items"),
                                          ("batch_not_atomic", 10, "a result without an \"ips\" array")] {
            let so = try FixtureBuilder.plugin(fixture, in: ConformanceKitTests.kitDir)
            let d = try Daemon(plugins: [["name": "net1", "path": .string(so)]], tag: "bad-\(fixture)")
            let items = JSON.array((0..<count).map { ["containerID": .string("m\($0)"), "node": "n1"] })
            var (st, r) = try d.request("POST", "/v1/networks/net1/attachments/batch", ["attachments": items])
            XCTAssertEqual(st, 200, r.serialized)
            let added = min(count, 8)
            XCTAssertEqual(r["succeeded"]?.int, added, "\(fixture): \(r.serialized)")
            XCTAssertEqual(r["failed"]?.int, count - added, fixture)
            let res = try XCTUnwrap(r["results"]?.array)
            let addrs = (0..<added).compactMap { res[$0]["result"]?["ips"]?[0]?["address"]?.string }
            XCTAssertEqual(Set(addrs).count, added, "\(fixture): distinct addresses: \(addrs)")
            for i in added..<count { XCTAssertEqual(res[i]["details"]?["status"], "RESOURCE_EXHAUSTED", "\(fixture) item \(i): \(res[i].serialized)") }
            (st, r) = try d.request("GET", "/v1/networks/net1/attachments")
            XCTAssertEqual(r["attachments"]?.array?.count, added, "\(fixture): only what the item-by-item path added is recorded")
            let evs = try d.request("GET", "/v1/events?since=0").1["events"]!.array!.filter { $0["type"] == "network.attached" }
            XCTAssertEqual(evs.count, added, "\(fixture): one event per recorded attachment")
            let m = try UnixHTTPConnection(path: d.socket).request("GET", "/metrics").text
            XCTAssertTrue(m.contains("berth_network_batches_total{network=\"net1\",path=\"item_by_item\"} 1"), m)
            XCTAssertTrue(m.contains("berth_network_batches_total{network=\"net1\",path=\"add_batch\"} 0"), m)
            XCTAssertTrue(eventually(5) { d.log().contains(warning) }, "\(fixture): \(d.log())")
        }
    }

    /// Single ADDs from many clients at once, group-committed by the executor: each gets exactly its own answer:
    /// distinct addresses, the same result for one key asked by every client, and one winner for an address all of
    /// them request.
    func testConcurrentSingleAddsEachGetTheirOwnAnswer() throws {
        let d = try netDaemon("concurrent", pools: [["name": "p", "ranges": [["subnet": "10.95.0.0/24"]]]])
        let clients = 16, each = 10
        let answers = Shared<[String: [String]]>([:])   // containerID -> every address answered for it
        let statuses = Shared<[Int]>([])                   // statuses of the requests for 10.95.0.250
        let failures = Shared<[String]>([])
        let group = DispatchGroup()
        for c in 0..<clients {
            group.enter()
            Thread.detachNewThread {
                let conn = UnixHTTPConnection(path: d.socket, timeoutSeconds: 20)
                var reqs: [JSON] = (0..<each).map { ["containerID": .string("s\(c)-\($0)"), "node": .string("n\(c % 4)")] }
                reqs.insert(["containerID": "shared", "node": "n0"], at: c % each)
                reqs.insert(["containerID": .string("want-\(c)"), "ips": ["10.95.0.250"]], at: (c * 3) % each)
                for body in reqs {
                    guard let r = try? conn.request("POST", "/v1/networks/net1/attachments", body: body.bytes) else {
                        failures.with { $0.append("no answer for \(body.serialized)") }
                        continue
                    }
                    let cid = body["containerID"]!.string!
                    if cid.hasPrefix("want-") { statuses.with { $0.append(r.status) } }
                    if r.status == 200, let a = try? r.json()["ips"]?[0]?["address"]?.string {
                        answers.with { $0[cid, default: []].append(a) }
                    } else if !cid.hasPrefix("want-") {
                        failures.with { $0.append("\(cid): \(r.status) \(r.text)") }
                    }
                }
                group.leave()
            }
        }
        group.wait()
        XCTAssertEqual(failures.get, [])
        let got = answers.get
        XCTAssertEqual(got["shared"]?.count, clients)
        XCTAssertEqual(Set(got["shared"] ?? []).count, 1, "one key, one answer: \(got["shared"] ?? [])")
        XCTAssertEqual(statuses.get.filter { $0 == 200 }.count, 1, "one client gets the requested address: \(statuses.get)")
        XCTAssertEqual(statuses.get.filter { $0 == 409 }.count, clients - 1, "\(statuses.get)")
        let winner = got.filter { $0.key.hasPrefix("want-") }
        XCTAssertEqual(winner.values.first, ["10.95.0.250/24"])
        let distinct = got.mapValues { Set($0) }
        XCTAssertTrue(distinct.values.allSatisfy { $0.count == 1 })
        let addrs = distinct.values.compactMap(\.first)
        XCTAssertEqual(Set(addrs).count, addrs.count, "no address handed out twice")
        XCTAssertEqual(addrs.count, clients * each + 2)
        let list = try d.request("GET", "/v1/networks/net1/attachments").1["attachments"]!.array!
        XCTAssertEqual(list.count, clients * each + 2)
        for a in list {
            XCTAssertEqual(got[a["containerID"]!.string!]?.first, a["result"]?["ips"]?[0]?["address"]?.string, "the record is the answer")
        }
        XCTAssertEqual(try d.request("GET", "/v1/networks/net1/capacity").1["active"]?.int, clients * each + 2)
    }

    func testBerthCNIErrorContract() throws {
        let d = try netDaemon("cnierr")
        // VERSION needs nothing.
        var (rc, out, _) = try runTool(cni, [], env: ["CNI_COMMAND": "VERSION"])
        XCTAssertEqual(rc, 0)
        XCTAssertEqual(try JSON.parse(out)["supportedVersions"]?.array?.count, 5)
        // Missing environment: code 4, naming the variables.
        (rc, out, _) = try runTool(cni, [], env: ["CNI_COMMAND": "ADD"], stdin: conf(d).serialized)
        XCTAssertEqual(rc, 4)
        XCTAssertTrue(try JSON.parse(out)["msg"]!.string!.contains("CNI_CONTAINERID"), out)
        // Not JSON: decode failure, code 6.
        (rc, out, _) = try runTool(cni, [], env: cniEnv("ADD"), stdin: "{nope")
        XCTAssertEqual(rc, 6, out)
        // Unsupported version: code 1.
        (rc, out, _) = try runTool(cni, [], env: cniEnv("ADD"), stdin: conf(d, version: "0.2.0").serialized)
        XCTAssertEqual(rc, 1, out)
        // berthd unreachable: code 11.
        let gone = conf(d).setting("ipam", ["type": "berth-cni", "socket": "/nonexistent/berthd.sock"])
        (rc, out, _) = try runTool(cni, [], env: cniEnv("ADD"), stdin: gone.serialized)
        XCTAssertEqual(rc, 11, out)
        XCTAssertEqual(try JSON.parse(out)["code"], 11)
        // ADD with CNI_ARGS IP= in the config's own version (0.3.1 result has "version").
        (rc, out, _) = try runTool(cni, [], env: cniEnv("ADD", "c9", extra: ["CNI_ARGS": "IgnoreUnknown=1;IP=10.99.0.77"]), stdin: conf(d, version: "0.3.1").serialized)
        XCTAssertEqual(rc, 0, out)
        var res = try JSON.parse(out)
        XCTAssertEqual(res["cniVersion"], "0.3.1")
        XCTAssertEqual(res["ips"]?[0]?["address"], "10.99.0.77/24")
        XCTAssertEqual(res["ips"]?[0]?["version"], "4")
        // args.cni.ips wins over CNI_ARGS.
        (rc, out, _) = try runTool(cni, [], env: cniEnv("ADD", "c10", extra: ["CNI_ARGS": "IP=10.99.0.78"]),
                                   stdin: conf(d).setting("args", ["cni": ["ips": ["10.99.0.79"]]]).serialized)
        XCTAssertEqual(rc, 0, out)
        res = try JSON.parse(out)
        XCTAssertEqual(res["ips"]?[0]?["address"], "10.99.0.79/24")
        XCTAssertNil(res["ips"]?[0]?["version"], "1.0.0 results carry no version field")
        // A taken address: a CNI error with a Berth code (100).
        (rc, out, _) = try runTool(cni, [], env: cniEnv("ADD", "c11", extra: ["CNI_ARGS": "IP=10.99.0.79"]), stdin: conf(d).serialized)
        XCTAssertEqual(rc, 100, out)
        // STATUS ok, GC, STATUS 50 when exhausted.
        (rc, out, _) = try runTool(cni, [], env: ["CNI_COMMAND": "STATUS"], stdin: conf(d, version: "1.1.0").serialized)
        XCTAssertEqual(rc, 0, out)
        let gcConf = conf(d, version: "1.1.0").setting("cni.dev/valid-attachments", [["containerID": "c9", "ifname": "eth0"]])
        (rc, out, _) = try runTool(cni, [], env: ["CNI_COMMAND": "GC"], stdin: gcConf.serialized)
        XCTAssertEqual(rc, 0, out)
        let cap = try d.request("GET", "/v1/networks/net1/capacity").1
        XCTAssertEqual(cap["active"], 1, "GC released everything but c9: \(cap.serialized)")
        let tiny = try netDaemon("cnitiny", pools: [["name": "t", "ranges": [["subnet": "10.98.0.0/30"]]]])
        (rc, out, _) = try runTool(cni, [], env: cniEnv("ADD", "t1"), stdin: conf(tiny).serialized)
        XCTAssertEqual(rc, 0, out)
        (rc, out, _) = try runTool(cni, [], env: cniEnv("ADD", "t2"), stdin: conf(tiny).serialized)
        XCTAssertEqual(rc, 101, "exhausted: \(out)")
        (rc, out, _) = try runTool(cni, [], env: ["CNI_COMMAND": "STATUS"], stdin: conf(tiny, version: "1.1.0").serialized)
        XCTAssertEqual(rc, 50, out)
        // DEL of an unknown container succeeds; DEL needs no netns.
        (rc, out, _) = try runTool(cni, [], env: ["CNI_COMMAND": "DEL", "CNI_CONTAINERID": "never", "CNI_IFNAME": "eth0"], stdin: conf(d).serialized)
        XCTAssertEqual(rc, 0, out)
    }

    /// Debian's `bridge` plugin delegates IPAM to berth-cni inside network namespaces made here.
    func testBridgeInteropInNetworkNamespaces() throws {
        guard geteuid() == 0 else { throw XCTSkip("needs root for network namespaces (CI runs as root)") }
        guard FileManager.default.isExecutableFile(atPath: "/usr/lib/cni/bridge") else {
            XCTFail("/usr/lib/cni/bridge is missing: install Debian's containernetworking-plugins (.ci/run does)")
            return
        }
        let d = try netDaemon("bridge")
        let tag = String(getpid() % 100000)
        let hostNS = "berth-h\(tag)", ctrNS = "berth-c\(tag)"
        try runTool("/usr/sbin/ip", ["netns", "add", hostNS])
        try runTool("/usr/sbin/ip", ["netns", "add", ctrNS])
        defer {
            _ = try? runTool("/usr/sbin/ip", ["netns", "del", ctrNS])
            _ = try? runTool("/usr/sbin/ip", ["netns", "del", hostNS])
        }
        // CNI_PATH: berth-cni is found by its type name in the build directory.
        let cniDir = tempDir("cnipath")
        try FileManager.default.createSymbolicLink(atPath: cniDir + "/berth-cni", withDestinationPath: cni)
        let net: JSON = ["cniVersion": "1.0.0", "name": "berthnet", "type": "bridge", "bridge": "berthbr0", "isGateway": true,
                         "ipam": ["type": "berth-cni", "socket": .string(d.socket), "network": "net1", "node": "node-a"]]
        func bridge(_ cmd: String, _ config: JSON, netns: String? = "/var/run/netns/\(ctrNS)") throws -> (Int32, String, String) {
            var env = ["CNI_COMMAND": cmd, "CNI_CONTAINERID": "ctr-1", "CNI_IFNAME": "eth0", "CNI_PATH": "\(cniDir):/usr/lib/cni",
                       "CNI_ARGS": "IgnoreUnknown=1", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"]
            if let netns { env["CNI_NETNS"] = netns }
            var args = ["netns", "exec", hostNS]
            args += ["/usr/lib/cni/bridge"]
            return try runTool("/usr/sbin/ip", args, env: env, stdin: config.serialized)
        }
        var (rc, out, err) = try bridge("ADD", net)
        XCTAssertEqual(rc, 0, "bridge ADD: \(out) \(err)")
        let result = try JSON.parse(out)
        let addr = result["ips"]?[0]?["address"]?.string ?? ""
        XCTAssertTrue(addr.hasPrefix("10.99.0."), out)
        let (_, ipOut, _) = try runTool("/usr/sbin/ip", ["-n", ctrNS, "addr", "show", "eth0"])
        XCTAssertTrue(ipOut.contains("inet \(addr)"), "eth0 in the container namespace has \(addr): \(ipOut)")
        var cap = try d.request("GET", "/v1/networks/net1/capacity").1
        XCTAssertEqual(cap["active"], 1)
        (rc, out, err) = try bridge("CHECK", net.setting("prevResult", result))
        XCTAssertEqual(rc, 0, "bridge CHECK: \(out) \(err)")
        (rc, out, err) = try bridge("DEL", net)
        XCTAssertEqual(rc, 0, "bridge DEL: \(out) \(err)")
        (rc, out, err) = try bridge("DEL", net)
        XCTAssertEqual(rc, 0, "bridge DEL twice: \(out) \(err)")
        try runTool("/usr/sbin/ip", ["netns", "del", ctrNS])
        (rc, out, err) = try bridge("DEL", net, netns: "/var/run/netns/\(ctrNS)")
        XCTAssertEqual(rc, 0, "bridge DEL after the netns is gone: \(out) \(err)")
        cap = try d.request("GET", "/v1/networks/net1/capacity").1
        XCTAssertEqual(cap["active"], 0, "the address is back in the pool: \(cap.serialized)")
        XCTAssertEqual(try d.request("GET", "/v1/networks/net1/attachments").1["attachments"]?.array?.count, 0)
    }

    /// kill -9 during 2,000 concurrent allocations; after restart every acknowledged allocation is there, no
    /// address is held twice, and the plugin's state matches the host's records (nothing partial).
    func testKill9DuringConcurrentAllocations() throws {
        let d = try netDaemon("kill9", pools: [["name": "big", "ranges": [["subnet": "10.96.0.0/20"]]]])
        let clients = 8, perClient = 250
        let acked = Shared<[String: String]>([:])   // containerID -> address
        let errors = Shared(0)
        let group = DispatchGroup()
        for c in 0..<clients {
            group.enter()
            Thread.detachNewThread {
                let conn = UnixHTTPConnection(path: d.socket, timeoutSeconds: 10)
                for i in 0..<perClient {
                    let cid = "k\(c)-\(i)"
                    let body: JSON = ["containerID": .string(cid), "ifname": "eth0", "node": .string("node-\(c % 3)")]
                    if let r = try? conn.request("POST", "/v1/networks/net1/attachments", body: body.bytes), r.status == 200,
                       let a = try? r.json()["ips"]?[0]?["address"]?.string {
                        acked.with { $0[cid] = a }
                    } else {
                        errors.with { $0 += 1 }
                        conn.close()
                    }
                }
                group.leave()
            }
        }
        // Kill while allocations are committing.
        while true {
            if acked.get.count >= 600 { break }
            usleep(2000)
        }
        d.kill9()
        group.wait()
        XCTAssertGreaterThan(errors.get, 0, "the kill happened mid-run")
        try d.start()
        let list = try d.request("GET", "/v1/networks/net1/attachments").1["attachments"]!.array!
        var byCID: [String: String] = [:]
        var addrs = Set<String>()
        for a in list {
            let cid = a["containerID"]!.string!
            let addr = a["result"]!["ips"]![0]!["address"]!.string!
            byCID[cid] = addr
            XCTAssertTrue(addrs.insert(addr).inserted, "address \(addr) is held twice")
        }
        for (cid, addr) in acked.get {
            XCTAssertEqual(byCID[cid], addr, "acknowledged allocation \(cid) -> \(addr) lost after kill -9")
        }
        let cap = try d.request("GET", "/v1/networks/net1/capacity").1
        XCTAssertEqual(cap["active"]?.int, list.count, "plugin active addresses equal host attachments (no partial write)")
        // Every surviving attachment still checks.
        for (cid, _) in byCID.prefix(50) {
            XCTAssertEqual(try d.request("GET", "/v1/networks/net1/attachments/\(cid)/eth0").0, 200)
        }
        print("kill -9 durability: \(acked.get.count) acknowledged before the kill, \(list.count) committed, \(errors.get) client errors")
    }
}
