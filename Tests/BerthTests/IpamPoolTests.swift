// Tests of the ipam-pool reference network plugin, loaded as the host loads it (the built .so, through the
// Loader, with its namespace in a real Store run by an Executor). host-local's acceptance tests are ported in
// spirit (range defaults, gateway and broadcast never handed out, round robin, wrap-around, exhaustion,
// requested addresses, dual stack, idempotency, DEL semantics, validation, GC), followed by the stateful
// scenarios (reserved addresses with bound MACs, release policies, holds that expire) and pool administration.
//
// Build the plugin first: `swift build` (the test loads <package root>/.build/debug/libberth-ipam-pool.so).

import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
@testable import BerthStore
import BerthCore
import BerthWire
import Foundation
import XCTest

final class IpamPoolTests: XCTestCase {
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()
    static var soPath: String { packageRoot + "/.build/debug/libberth-ipam-pool.so" }
    /// One content-addressed copy directory for the whole run, so the same .so is dlopened once.
    static let copyDir: String = {
        let d = NSTemporaryDirectory() + "berth-ipam-plugins-\(getpid())"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        return d
    }()

    var dirs: [String] = []
    var nets: [Net] = []

    override func setUpWithError() throws {
        guard FileManager.default.fileExists(atPath: IpamPoolTests.soPath) else {
            throw XCTSkip("build the plugin first (swift build): \(IpamPoolTests.soPath) is missing")
        }
    }

    override class func tearDown() {
        try? FileManager.default.removeItem(atPath: copyDir)
        super.tearDown()
    }

    override func tearDown() {
        for n in nets { n.ex.stop() }
        nets = []
        for d in dirs { try? FileManager.default.removeItem(atPath: d) }
        dirs = []
    }

    func tempDir() -> String {
        let d = NSTemporaryDirectory() + "berth-ipam-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        dirs.append(d)
        return d
    }

    /// A network (one plugin instance) on its own store.
    final class Net {
        let store: Store
        let ex: Executor
        let loader: Loader
        let spec: PluginSpec
        var inst: PluginInstance
        var events: [(Int32, String)] = []

        init(config: JSON, dir: String, store existing: Store? = nil, name: String = "net1") throws {
            store = try existing ?? Store(path: dir + "/state.db", synchronous: "normal")
            ex = Executor(store: store)
            ex.start()
            loader = Loader(copyDir: IpamPoolTests.copyDir)
            spec = PluginSpec(name: name, path: IpamPoolTests.soPath, config: config)
            do {
                let p = try loader.load(spec)
                inst = try loader.instantiate(p, spec: spec, executor: ex, log: { _, _ in })
            } catch {
                ex.stop()
                throw error
            }
        }

        /// A fresh instance of the plugin on the same store and namespace (as after a daemon restart).
        func restart(config: JSON? = nil) throws {
            var s = spec
            if let config { s.config = config }
            let p = try loader.load(s)
            inst = try loader.instantiate(p, spec: s, executor: ex, log: { _, _ in })
        }

        func call(_ op: String, _ body: JSON) throws -> JSON {
            let inst = self.inst
            let ops = inst.network!.pointee
            let fn = [
                "add": ops.add, "del": ops.del, "check": ops.check, "gc": ops.gc, "status": ops.status, "capacity": ops.capacity,
                "add_batch": ops.add_batch,
            ][op]!
            return try ex.runSync { try inst.callObject(op, fn, body.setting("network", "net1")) }
        }

        /// An admin operation run to its end as the host runs it (every step in its own transaction).
        func admin(_ op: String, _ body: JSON = .object([])) throws -> JSON {
            try NetworkService.adminInSteps(ex, { self.inst }, op, body)
        }

        /// One call of an admin operation, as if berthd stopped after it (a staged one is left halfway).
        func adminStep(_ op: String, _ body: JSON) throws -> JSON {
            let inst = self.inst
            return try ex.runSync { try inst.networkAdmin(op, body) }
        }

        /// A key of the plugin's namespace, read on the executor (between the steps of a staged operation).
        func kv(_ key: String) throws -> String? {
            let store = self.store, ns = spec.name
            return try ex.runSync { try store.kvGet(ns, key).map { String(decoding: $0, as: UTF8.self) } }
        }

        @discardableResult
        func add(_ cid: String, _ ifname: String = "eth0", _ extra: JSON = .object([])) throws -> JSON {
            var req: JSON = ["containerID": .string(cid), "ifname": .string(ifname)]
            for (k, v) in extra.object ?? [] { req = req.setting(k, v) }
            return try call("add", req)
        }

        /// The first address of an ADD result, without its prefix.
        func addIP(_ cid: String, _ ifname: String = "eth0", _ extra: JSON = .object([])) throws -> String {
            let out = try add(cid, ifname, extra)
            return String(out["ips"]?[0]?["address"]?.string?.split(separator: "/").first ?? "")
        }

        func del(_ cid: String, _ ifname: String = "eth0", final: Bool = false) throws {
            _ = try call("del", ["containerID": .string(cid), "ifname": .string(ifname), "final": .bool(final)])
        }

        func check(_ cid: String, _ ifname: String = "eth0") throws {
            _ = try call("check", ["containerID": .string(cid), "ifname": .string(ifname)])
        }

        func capacity(_ node: String? = nil) throws -> JSON {
            try call("capacity", node.map { ["node": .string($0)] } ?? .object([]))
        }

        /// State of one address as pool.show reports it ("available" when not listed).
        func state(_ pool: String, _ address: String) throws -> String {
            let show = try admin("pool.show", ["name": .string(pool)])
            for a in show["addresses"]?.array ?? [] where a["address"]?.string == address { return a["state"]?.string ?? "?" }
            return "available"
        }
    }

    func net(_ config: JSON) throws -> Net {
        let n = try Net(config: config, dir: tempDir())
        nets.append(n)
        return n
    }

    func net(pool: JSON) throws -> Net { try net(["pools": [pool]]) }

    /// Asserts that `body` fails with `status` and a message containing `contains`.
    func expectError(_ status: Int32, _ contains: String, file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> Void) {
        do {
            try body()
            XCTFail("expected \(BerthStatus(rawValue: status).name) containing \"\(contains)\", got success", file: file, line: line)
        } catch let e as BerthError {
            XCTAssertEqual(e.statusName, BerthStatus(rawValue: status).name, "message: \(e.message)", file: file, line: line)
            XCTAssertTrue(e.message.contains(contains), "\"\(e.message)\" does not contain \"\(contains)\"", file: file, line: line)
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: line)
        }
    }

    static let INVALID: Int32 = 3, NOT_FOUND: Int32 = 5, EXISTS: Int32 = 6, EXHAUSTED: Int32 = 8, PRECONDITION: Int32 = 9,
               UNIMPLEMENTED: Int32 = 12

    // MARK: - host-local, in spirit

    func testRangeDefaults24() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.1.2.0/24"]]])
        let out = try n.add("c1")
        let ip = out["ips"]?[0]
        XCTAssertEqual(ip?["address"]?.string, "10.1.2.2/24")  // .1 is the gateway
        XCTAssertEqual(ip?["gateway"]?.string, "10.1.2.1")
        XCTAssertEqual(ip?["family"]?.int, 4)
        XCTAssertEqual(ip?["pool"]?.string, "p")
        XCTAssertEqual(ip?["mac"]?.string, "0a:58:0a:01:02:02")
        let show = try n.admin("pool.show", ["name": "p"])
        XCTAssertEqual(show["pool"]?["ranges"]?[0]?["start"]?.string, "10.1.2.1")
        XCTAssertEqual(show["pool"]?["ranges"]?[0]?["end"]?.string, "10.1.2.254")
        XCTAssertEqual(show["pool"]?["ranges"]?[0]?["gateway"]?.string, "10.1.2.1")
        let cap = try n.capacity()
        XCTAssertEqual(cap["free"]?.int, 252)  // .2-.254 minus the one in use
        XCTAssertEqual(cap["active"]?.int, 1)
    }

    func testRangeDefaults25() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.1.2.128/25"]]])
        let show = try n.admin("pool.show", ["name": "p"])
        XCTAssertEqual(show["pool"]?["ranges"]?[0]?["start"]?.string, "10.1.2.129")
        XCTAssertEqual(show["pool"]?["ranges"]?[0]?["end"]?.string, "10.1.2.254")
        XCTAssertEqual(try n.capacity()["free"]?.int, 125)
        XCTAssertEqual(try n.addIP("c1"), "10.1.2.130")
    }

    func testRangeDefaultsV6() throws {
        let n = try net(pool: ["name": "v6", "ranges": [["subnet": "2001:db8:1::/64"]]])
        let show = try n.admin("pool.show", ["name": "v6"])
        XCTAssertEqual(show["pool"]?["ranges"]?[0]?["start"]?.string, "2001:db8:1::1")
        XCTAssertEqual(show["pool"]?["ranges"]?[0]?["end"]?.string, "2001:db8:1:0:ffff:ffff:ffff:ffff")
        let out = try n.add("c1")
        XCTAssertEqual(out["ips"]?[0]?["address"]?.string, "2001:db8:1::2/64")
        XCTAssertEqual(out["ips"]?[0]?["gateway"]?.string, "2001:db8:1::1")
        XCTAssertEqual(out["ips"]?[0]?["family"]?.int, 6)
        // 0a:58 + the first four bytes of SHA-256 of the 16 address bytes (computed with Python's hashlib).
        XCTAssertEqual(out["ips"]?[0]?["mac"]?.string, "0a:58:05:9c:93:9a")
        XCTAssertEqual(try n.add("c2")["ips"]?[0]?["mac"]?.string, "0a:58:c6:76:03:38")  // for 2001:db8:1::3
        // A /64 is never enumerated: the pool's keys stay few. Its count is reported capped at 2^50.
        XCTAssertLessThan(try n.store.kvCount("net1"), 40)
        XCTAssertEqual(try n.capacity()["free"]?.int, 1 << 50)
    }

    func testSlash29IterationBroadcastExhaustionWrapAround() throws {
        let n = try net(pool: ["name": "small", "ranges": [["subnet": "192.168.1.0/29"]]])
        // .0 network, .1 gateway, .7 broadcast: .2-.6 in order.
        for (i, want) in ["192.168.1.2", "192.168.1.3", "192.168.1.4", "192.168.1.5", "192.168.1.6"].enumerated() {
            XCTAssertEqual(try n.addIP("c\(i)"), want)
        }
        expectError(Self.EXHAUSTED, "no IP addresses available in pool small (network net1)") { try n.add("c5") }
        // Wrap around: after .6 the next free address is the lowest.
        try n.del("c1")  // .3
        try n.del("c3")  // .5
        XCTAssertEqual(try n.addIP("c6"), "192.168.1.3")
        XCTAssertEqual(try n.addIP("c7"), "192.168.1.5")  // continues after .3, does not restart at the bottom
        expectError(Self.EXHAUSTED, "no IP addresses available") { try n.add("c8") }
        let st = try n.call("capacity", .object([]))
        XCTAssertEqual(st["free"]?.int, 0)
        expectError(Self.EXHAUSTED, "no IP addresses available") { _ = try n.call("status", .object([])) }
    }

    func testRoundRobinDoesNotReuseJustReleased() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.0.0.0/29"]]])
        XCTAssertEqual(try n.addIP("a"), "10.0.0.2")
        XCTAssertEqual(try n.addIP("b"), "10.0.0.3")
        try n.del("a")
        XCTAssertEqual(try n.addIP("c"), "10.0.0.4")  // not the just-released .2
        try n.del("b")
        XCTAssertEqual(try n.addIP("d"), "10.0.0.5")
        XCTAssertEqual(try n.addIP("e"), "10.0.0.6")
        XCTAssertEqual(try n.addIP("f"), "10.0.0.2")  // wrap-around to the lowest free
        XCTAssertNoThrow(try n.call("status", .object([])))
        XCTAssertEqual(try n.addIP("g"), "10.0.0.3")
        expectError(Self.EXHAUSTED, "no IP addresses available in any pool of network net1") { _ = try n.call("status", .object([])) }
    }

    func testRequestedAddresses() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.1.0.0/24", "start": "10.1.0.10", "end": "10.1.0.200"]]])
        XCTAssertEqual(try n.addIP("a", "eth0", ["ips": ["10.1.0.50"]]), "10.1.0.50")
        XCTAssertEqual(try n.addIP("a2", "eth0", ["ips": ["10.1.0.51/24"]]), "10.1.0.51")  // CIDR form accepted
        expectError(Self.EXISTS, "10.1.0.50 is already in use by container a") { try n.add("b", "eth0", ["ips": ["10.1.0.50"]]) }
        expectError(Self.INVALID, "10.1.0.5 is outside the range 10.1.0.10-10.1.0.200") { try n.add("b", "eth0", ["ips": ["10.1.0.5"]]) }
        expectError(Self.INVALID, "10.1.0.1 is the gateway") { try n.add("b", "eth0", ["ips": ["10.1.0.1"]]) }
        expectError(Self.INVALID, "10.9.9.9 is not in pool p") { try n.add("b", "eth0", ["pool": "p", "ips": ["10.9.9.9"]]) }
        expectError(Self.INVALID, "not in any pool") { try n.add("b", "eth0", ["ips": ["10.9.9.9"]]) }
        expectError(Self.INVALID, "is not a valid IP address") { try n.add("b", "eth0", ["ips": ["10.1.0.300"]]) }
        expectError(Self.INVALID, "pool p has no IPv6 addresses") { try n.add("b", "eth0", ["pool": "p", "ips": ["2001:db8::5"]]) }
        // Failed requests changed nothing: round robin continues after the last address handed out.
        XCTAssertEqual(try n.addIP("b"), "10.1.0.52")
        XCTAssertEqual(try n.capacity()["active"]?.int, 3)
    }

    func testDualStack() throws {
        let n = try net(pool: ["name": "ds", "ranges": [["subnet": "10.1.2.0/24"], ["subnet": "2001:db8:1::/64"]],
                               "routes": [["dst": "0.0.0.0/0", "gw": "10.1.2.1"], ["dst": "::/0"]]])
        let out = try n.add("c1")
        let ips = out["ips"]?.array ?? []
        XCTAssertEqual(ips.count, 2)
        XCTAssertEqual(ips.first?["address"]?.string, "10.1.2.2/24")
        XCTAssertEqual(ips.first?["family"]?.int, 4)
        XCTAssertEqual(ips.last?["address"]?.string, "2001:db8:1::2/64")
        XCTAssertEqual(ips.last?["family"]?.int, 6)
        // One interface, one MAC: derived from the first (IPv4) address for both entries.
        XCTAssertEqual(ips.first?["mac"]?.string, "0a:58:0a:01:02:02")
        XCTAssertEqual(ips.last?["mac"]?.string, "0a:58:0a:01:02:02")
        XCTAssertEqual(out["routes"]?.array?.count, 2)
        let second = try n.add("c2")
        XCTAssertEqual(second["ips"]?[1]?["address"]?.string, "2001:db8:1::3/64")
        XCTAssertEqual(second["ips"]?[1]?["mac"]?.string, "0a:58:0a:01:02:03")
        // Requested addresses across both families.
        let req = try n.add("c3", "eth0", ["ips": ["10.1.2.100", "2001:db8:1::100"]])
        XCTAssertEqual(req["ips"]?[0]?["address"]?.string, "10.1.2.100/24")
        XCTAssertEqual(req["ips"]?[1]?["address"]?.string, "2001:db8:1::100/64")
        try n.del("c1")
        try n.del("c2")
        try n.del("c3")
        let cap = try n.capacity()
        XCTAssertEqual(cap["active"]?.int, 0)
        XCTAssertEqual(cap["free"]?.int, 253)  // the scarcest family
    }

    func testSameContainerTwoInterfaces() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.1.2.0/24"]]])
        XCTAssertEqual(try n.addIP("c1", "eth0"), "10.1.2.2")
        XCTAssertEqual(try n.addIP("c1", "eth1"), "10.1.2.3")
        try n.del("c1", "eth0")
        XCTAssertNoThrow(try n.check("c1", "eth1"))
        expectError(Self.NOT_FOUND, "container c1 interface eth0") { try n.check("c1", "eth0") }
    }

    func testAddIsIdempotent() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.1.2.0/24"]], "dns": ["nameservers": ["10.1.2.53"], "domain": "x"]])
        let a = try n.add("c1")
        let b = try n.add("c1")
        XCTAssertEqual(a, b)
        XCTAssertEqual(a["dns"]?["nameservers"]?[0]?.string, "10.1.2.53")
        XCTAssertEqual(try n.capacity()["active"]?.int, 1)
        // Whitespace around the container id is trimmed (as host-local does).
        XCTAssertEqual(try n.add("  c1 "), a)
    }

    func testDelUnknownAndTwice() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.1.2.0/24"]]])
        XCTAssertNoThrow(try n.del("nobody"))
        try n.add("c1")
        XCTAssertNoThrow(try n.check("c1"))
        try n.del("c1")
        XCTAssertNoThrow(try n.del("c1"))
        expectError(Self.NOT_FOUND, "no addresses are allocated to container c1") { try n.check("c1") }
        XCTAssertEqual(try n.capacity()["active"]?.int, 0)
        expectError(Self.INVALID, "\"containerID\" is required") { _ = try n.call("del", ["ifname": "eth0"]) }
    }

    func testPoolValidation() throws {
        let n = try net(.object([]))
        func imp(_ pool: JSON) throws { _ = try n.admin("pool.import", pool) }
        expectError(Self.INVALID, "10.1.0.5/24 has host bits set") { try imp(["name": "a", "ranges": [["subnet": "10.1.0.5/24"]]]) }
        expectError(Self.INVALID, "10.1.0.0/31 is too small") { try imp(["name": "a", "ranges": [["subnet": "10.1.0.0/31"]]]) }
        expectError(Self.INVALID, "10.1.0.0/32 is too small") { try imp(["name": "a", "ranges": [["subnet": "10.1.0.0/32"]]]) }
        expectError(Self.INVALID, "2001:db8::/127 is too small") { try imp(["name": "a", "ranges": [["subnet": "2001:db8::/127"]]]) }
        expectError(Self.INVALID, "10.1.1.10 is outside the subnet 10.1.0.0/24") {
            try imp(["name": "a", "ranges": [["subnet": "10.1.0.0/24", "start": "10.1.1.10"]]])
        }
        expectError(Self.INVALID, "end 10.1.0.255 is the broadcast address") {
            try imp(["name": "a", "ranges": [["subnet": "10.1.0.0/24", "end": "10.1.0.255"]]])
        }
        expectError(Self.INVALID, "overlaps ranges[0]") {
            try imp(["name": "a", "ranges": [["subnet": "10.1.0.0/24"], ["subnet": "10.1.0.0/25"]]])
        }
        expectError(Self.INVALID, "\"10.1.0\" is not a valid CIDR") { try imp(["name": "a", "ranges": [["subnet": "10.1.0"]]]) }
        expectError(Self.INVALID, "\"10.1.0.x\" is not a valid IP address") {
            try imp(["name": "a", "ranges": [["subnet": "10.1.0.0/24", "gateway": "10.1.0.x"]]])
        }
        expectError(Self.INVALID, "reserved[0]: 10.9.0.1 is not in the pool") {
            try imp(["name": "a", "ranges": [["subnet": "10.1.0.0/24"]], "reserved": ["10.9.0.1"]])
        }
        expectError(Self.INVALID, "pool name \"bad/name\" is invalid") { try imp(["name": "bad/name", "ranges": [["subnet": "10.1.0.0/24"]]]) }
        // Across pools of the network.
        try imp(["name": "a", "ranges": [["subnet": "10.1.0.0/24", "end": "10.1.0.100"]]])
        expectError(Self.INVALID, "overlaps range 10.1.0.1-10.1.0.100 of pool a") {
            try imp(["name": "b", "ranges": [["subnet": "10.1.0.0/24", "start": "10.1.0.50"]]])
        }
        XCTAssertNoThrow(try imp(["name": "b", "ranges": [["subnet": "10.1.0.0/24", "start": "10.1.0.101"]]]))
        // Nothing was left behind by the rejected imports.
        XCTAssertEqual(try n.admin("pool.list")["pools"]?.array?.map { $0["name"]?.string ?? "" }, ["a", "b"])
        // The configuration itself is validated by the host against the strict schema.
        XCTAssertThrowsError(try net(["pools": [["name": "x", "ranges": [["subnet": "10.0.0.0/24"]], "colour": "red"]]])) { e in
            XCTAssertTrue("\(e)".contains("colour"), "\(e)")
        }
        XCTAssertThrowsError(try net(["pools": [["name": "x", "ranges": [["subnet": "10.0.0.5/24"]]]]])) { e in
            XCTAssertTrue("\(e)".contains("host bits"), "\(e)")
        }
    }

    /// Counts of IPv6 pools never wrap: one /64 next to an IPv4 pool once answered "free": -9223372036853445000.
    func testCapacityOfIPv6PoolsIsExactAndNeverWraps() throws {
        let n = try net(["pools": [["name": "v6", "ranges": [["subnet": "2001:db8:1::/64"]]],
                                   ["name": "v4", "ranges": [["subnet": "10.1.0.0/24"]]]]])
        let slash64 = "18446744073709551614"  // 2^64 - 1 addresses from ::1, minus the gateway
        var cap = try n.capacity()
        XCTAssertEqual(cap["free"]?.int, 1 << 50)
        XCTAssertEqual(cap["freeExact"]?.string, "18446744073709551867")  // + the /24's 253
        XCTAssertEqual(cap["pools"]?[1]?["name"]?.string, "v6")
        XCTAssertEqual(cap["pools"]?[1]?["freeExact"]?.string, slash64)
        XCTAssertNil(cap["pools"]?[0]?["freeExact"], "a count under 2^50 needs no exact string")
        XCTAssertEqual(cap["pools"]?[0]?["free"]?.int, 253)
        // Two /64s in one pool: past 2^64, exact all the same (stored as a decimal string).
        _ = try n.admin("pool.import", ["name": "v6", "ranges": [["subnet": "2001:db8:1::/64"], ["subnet": "2001:db8:2::/64"]]])
        try n.add("c1", "eth0", ["pool": "v6"])
        cap = try n.capacity()
        XCTAssertEqual(cap["pools"]?[1]?["freeExact"]?.string, "36893488147419103227")  // 2 x slash64 - 1 active
        XCTAssertEqual(cap["pools"]?[1]?["active"]?.int, 1)
        XCTAssertEqual(cap["active"]?.int, 1)
        let list = try n.admin("pool.list")["pools"]?.array ?? []
        XCTAssertEqual(list.last?["byFamily"]?["6"]?["sizeExact"]?.string, "36893488147419103228")
        XCTAssertEqual(list.last?["free"]?.int, 1 << 50)
        // A fresh instance reads the stored counters back exactly.
        try n.restart()
        XCTAssertEqual(try n.capacity()["pools"]?[1]?["freeExact"]?.string, "36893488147419103227")
    }

    /// A pool binds only MACs an interface can have: not multicast, broadcast or all zeros, and each once per network.
    func testPoolMACsMustBeUsableAndUnique() throws {
        let n = try net(.object([]))
        func imp(_ name: String, _ macs: JSON) throws {
            _ = try n.admin("pool.import", ["name": .string(name), "ranges": [["subnet": name == "a" ? "10.1.0.0/24" : "10.2.0.0/24"]], "macs": macs])
        }
        expectError(Self.INVALID, "ff:ff:ff:ff:ff:ff is the broadcast address") { try imp("a", ["10.1.0.10": "FF:FF:FF:FF:FF:FF"]) }
        expectError(Self.INVALID, "01:00:5e:00:00:01 is a multicast address") { try imp("a", ["10.1.0.10": "01:00:5e:00:00:01"]) }
        expectError(Self.INVALID, "33:33:00:00:00:01 is a multicast address") { try imp("a", ["10.1.0.10": "33-33-00-00-00-01"]) }
        expectError(Self.INVALID, "00:00:00:00:00:00 is all zeros") { try imp("a", ["10.1.0.10": "00:00:00:00:00:00"]) }
        expectError(Self.INVALID, "52:54:00:00:00:10 is bound to both 10.1.0.10 and 10.1.0.11") {
            try imp("a", ["10.1.0.10": "52:54:00:00:00:10", "10.1.0.11": "52:54:00:00:00:10"])
        }
        expectError(Self.INVALID, "10.1.0.10 is given twice") { try imp("a", ["10.1.0.10": "52:54:00:00:00:10", " 10.1.0.10": "52:54:00:00:00:11"]) }
        XCTAssertEqual(try n.admin("pool.list")["pools"]?.array?.count, 0, "a refused import changes nothing")
        try imp("a", ["10.1.0.10": "52:54:00:00:00:10"])
        expectError(Self.INVALID, "52:54:00:00:00:10 (for 10.2.0.10) is already bound to 10.1.0.10 in pool a") {
            try imp("b", ["10.2.0.10": "52:54:00:00:00:10"])
        }
        XCTAssertEqual(try n.admin("pool.list")["pools"]?.array?.count, 1)
        // Re-importing the pool that holds the binding is fine; so is a distinct MAC elsewhere.
        XCTAssertNoThrow(try imp("a", ["10.1.0.10": "52:54:00:00:00:10"]))
        XCTAssertNoThrow(try imp("b", ["10.2.0.10": "52:54:00:00:00:20"]))
        XCTAssertEqual(try n.add("c1", "eth0", ["ips": ["10.2.0.10"]])["ips"]?[0]?["mac"]?.string, "52:54:00:00:00:20")
    }

    /// pool.import refuses fields it does not know, at every level, naming them and the allowed ones.
    func testPoolImportRefusesUnknownFields() throws {
        let n = try net(.object([]))
        let base: [(String, JSON)] = [("name", "p"), ("ranges", [["subnet": "10.1.0.0/24"]])]
        func imp(_ extra: [(String, JSON)]) throws { _ = try n.admin("pool.import", .object(base + extra)) }
        expectError(Self.INVALID, "pool p: the pool document has unknown field \"colour\"; allowed: name, ranges, ips, exclude, reserved, macs, routes, dns, vlan, nodes") {
            try imp([("colour", "red")])
        }
        expectError(Self.INVALID, "unknown fields \"gatway\", \"vlanId\"") { try imp([("gatway", "10.1.0.1"), ("vlanId", 3)]) }
        expectError(Self.INVALID, "pool p: ranges[1] has unknown field \"gatway\"; allowed: subnet, start, end, gateway") {
            _ = try n.admin("pool.import", ["name": "p", "ranges": [["subnet": "10.1.0.0/24"], ["subnet": "10.2.0.0/24", "gatway": "10.2.0.1"]]])
        }
        expectError(Self.INVALID, "pool p: routes[0] has unknown field \"via\"; allowed: dst, gw") {
            try imp([("routes", [["dst": "0.0.0.0/0", "via": "10.1.0.1"]])])
        }
        expectError(Self.INVALID, "pool p: dns has unknown field \"servers\"; allowed: nameservers, domain, search, options") {
            try imp([("dns", ["servers": ["10.1.0.53"]])])
        }
        XCTAssertEqual(try n.admin("pool.list")["pools"]?.array?.count, 0, "a refused import changes nothing")
        // Updating an existing pool is checked the same way; the stored pool stays as it was.
        try imp([("vlan", 5)])
        expectError(Self.INVALID, "unknown field \"vlan_id\"") { _ = try n.admin("pool.import", ["name": "p", "vlan_id": 7]) }
        XCTAssertEqual(try n.admin("pool.show", ["name": "p"])["pool"]?["vlan"]?.int, 5)
    }

    /// A pool of 16,384 explicit addresses: more than one step of an import writes (IpamPool.stepAddresses).
    static let bigPool: JSON = ["name": "big", "ranges": [["subnet": "10.50.0.0/16", "start": "10.50.0.1", "end": "10.50.0.10"]],
                                "ips": ["10.50.1.0-10.50.64.255"], "reserved": ["10.50.2.0-10.50.2.255"]]

    /// A large import runs in steps, each its own transaction: an ADD issued while it runs completes before it does.
    func testLargeImportLetsAnAddRunBeforeItFinishes() throws {
        let n = try net(pool: ["name": "small", "ranges": [["subnet": "10.9.0.0/24"]]])
        let order = Shared<[String]>([])
        let finished = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            do { _ = try n.admin("pool.import", Self.bigPool); order.with { $0.append("import") } } catch { order.with { $0.append("import failed: \(error)") } }
            finished.signal()
        }
        // Wait until the import has begun (its marker is in the store) or has ended; read between its steps.
        var sawMarker = false
        while order.get.isEmpty {
            if try n.kv("importing/big") != nil { sawMarker = true; break }
            usleep(200)
        }
        try n.add("c1", "eth0", ["pool": "small"])
        order.with { $0.append("add") }
        finished.wait()
        XCTAssertTrue(sawMarker, "the import never showed a step in progress: it ran as one transaction")
        XCTAssertEqual(order.get, ["add", "import"], "the ADD waited for the whole import")
        // The staged import left exactly what a one-transaction import would.
        let big = try n.admin("pool.list")["pools"]?.array?.first { $0["name"]?.string == "big" }
        XCTAssertEqual(big?["free"]?.int, 9 + 16_384 - 256)
        XCTAssertEqual(big?["reserved"]?.int, 256)
        XCTAssertNil(try n.kv("importing/big"))
        XCTAssertNil(try n.kv("importdoc/big"))
        XCTAssertEqual(try n.addIP("c2", "eth0", ["ips": ["10.50.64.255"]]), "10.50.64.255")
        // reserved: taken when asked for with useReserved (reserved means reserved: not by a plain request)
        XCTAssertEqual(try n.addIP("c3", "eth0", ["ips": ["10.50.2.7"], "useReserved": true]), "10.50.2.7")
        XCTAssertEqual(try n.state("big", "10.50.2.8"), "reserved")
    }

    /// An import stopped halfway (berthd gone) leaves no live pool; the same document finishes it, pool.delete rolls it
    /// back, and other imports are refused meanwhile with a message that says so.
    func testStagedImportStoppedHalfwayResumesOrRollsBack() throws {
        let n = try net(.object([]))
        XCTAssertNotNil(try n.adminStep("pool.import", Self.bigPool)["continue"])
        XCTAssertNotNil(try n.adminStep("pool.import", Self.bigPool.setting("continue", ["pool": "big"]))["continue"])
        try n.restart()  // a new instance on the same store, as after a restart of berthd
        XCTAssertEqual(try n.admin("pool.list")["pools"]?.array?.count, 0, "a half-imported pool is not live")
        expectError(Self.PRECONDITION, "pool big is being imported in steps") {
            _ = try n.admin("pool.import", ["name": "other", "ranges": [["subnet": "10.8.0.0/24"]]])
        }
        expectError(Self.PRECONDITION, "an import of pool big with another document did not finish") {
            _ = try n.admin("pool.import", ["name": "big", "ranges": [["subnet": "10.50.0.0/24"]]])
        }
        // Rolled back: nothing of it is left, and its addresses are free for another pool.
        XCTAssertEqual(try n.admin("pool.delete", ["name": "big"])["deleted"]?.string, "big")
        XCTAssertEqual(try n.store.kvCount("net1"), 0)
        _ = try n.admin("pool.import", ["name": "other", "ranges": [["subnet": "10.50.0.0/16"]]])
        _ = try n.admin("pool.delete", ["name": "other"])
        // Resumed: the same document again finishes it.
        XCTAssertNotNil(try n.adminStep("pool.import", Self.bigPool)["continue"])
        let done = try n.admin("pool.import", Self.bigPool)
        XCTAssertEqual(done["created"]?.bool, true)
        XCTAssertEqual(done["free"]?.int, 9 + 16_384 - 256)
        // A staged deletion stopped halfway: the pool is gone at once, its keys go in steps, the same request finishes.
        XCTAssertNotNil(try n.adminStep("pool.delete", ["name": "big"])["continue"])
        XCTAssertEqual(try n.admin("pool.list")["pools"]?.array?.count, 0)
        expectError(Self.PRECONDITION, "pool big is still being deleted") { _ = try n.admin("pool.import", Self.bigPool) }
        XCTAssertEqual(try n.admin("pool.delete", ["name": "big"])["deleted"]?.string, "big")
        XCTAssertEqual(try n.store.kvCount("net1"), 0)
    }

    /// What one pool may hold is bounded, with errors that say so.
    func testPoolSizeLimits() throws {
        let n = try net(.object([]))
        let ranges = (0..<8193).map { i -> JSON in ["subnet": .string("10.\(i / 256).\(i % 256).0/29")] }
        expectError(Self.INVALID, "\"ranges\" has 8193 entries; a pool holds at most 8192 ranges") {
            _ = try n.admin("pool.import", ["name": "p", "ranges": .array(ranges)])
        }
        XCTAssertNoThrow(try n.admin("pool.import", ["name": "p", "ranges": .array(Array(ranges.prefix(8192)))]))
        XCTAssertEqual(try n.capacity()["free"]?.int, 8192 * 5)  // a /29: .2-.6
        expectError(Self.INVALID, "a pool lists at most 65536 explicit addresses") {
            _ = try n.admin("pool.import", ["name": "q", "ranges": [["subnet": "10.200.0.0/14", "end": "10.200.0.5"]],
                                            "ips": ["10.201.0.0-10.201.255.255", "10.202.0.0-10.202.0.1"]])
        }
        _ = try n.admin("pool.delete", ["name": "p"])
        XCTAssertEqual(try n.store.kvCount("net1"), 0)
    }

    func testGC() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.1.2.0/24"]]])
        for c in ["a", "b", "c"] { try n.add(c) }
        let out = try n.call("gc", ["valid": [["containerID": "b"]]])  // ifname defaults to eth0
        let released = (out["released"]?.array ?? []).compactMap { $0["containerID"]?.string }.sorted()
        XCTAssertEqual(released, ["a", "c"])
        XCTAssertNoThrow(try n.check("b"))
        expectError(Self.NOT_FOUND, "container a") { try n.check("a") }
        XCTAssertEqual(try n.capacity()["active"]?.int, 1)
    }

    func testExplicitIPsAndExclusions() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.1.0.0/29"]], "exclude": ["10.1.0.3"],
                               "ips": ["10.1.5.7/24", "10.1.5.8/24"]])
        var got: [String] = []
        for i in 0..<6 { got.append(try n.add("c\(i)")["ips"]?[0]?["address"]?.string ?? "") }
        XCTAssertEqual(got, ["10.1.0.2/29", "10.1.0.4/29", "10.1.0.5/29", "10.1.0.6/29", "10.1.5.7/24", "10.1.5.8/24"])
        expectError(Self.EXHAUSTED, "no IP addresses available in pool p") { try n.add("c6") }
        let c4 = try n.add("c4")
        XCTAssertEqual(c4["ips"]?[0]?["gateway"]?.string, "10.1.5.1")
        expectError(Self.INVALID, "10.1.0.3 is excluded") { try n.add("x", "eth0", ["ips": ["10.1.0.3"]]) }
    }

    // MARK: - stateful apps

    static let vlan100: JSON = [
        "name": "vlan100",
        "ranges": [["subnet": "10.1.0.0/24", "start": "10.1.0.10", "end": "10.1.0.200", "gateway": "10.1.0.1"]],
        "reserved": ["10.1.0.10", "10.1.0.11", "10.1.0.12"],
        "macs": ["10.1.0.10": "52:54:00:00:00:10", "10.1.0.11": "52:54:00:00:00:11", "10.1.0.12": "52:54:00:00:00:12"],
        "routes": [["dst": "0.0.0.0/0", "gw": "10.1.0.1"]],
        "dns": ["nameservers": ["10.1.0.2"]],
        "vlan": 100,
    ]

    func identity(_ app: String, _ ord: Int, _ policy: String, keep: Int? = nil) -> JSON {
        var id: JSON = ["app": .string(app), "ordinal": .number(Double(ord)), "releasePolicy": .string(policy)]
        if let keep { id = id.setting("keepSeconds", .number(Double(keep))) }
        return ["identity": id]
    }

    func testStatefulImmutableKeepsAddressAndMAC() throws {
        let n = try net(pool: Self.vlan100)
        XCTAssertEqual(try n.capacity()["reserved"]?.int, 3)
        for i in 0..<3 {
            let out = try n.add("db-\(i)-v1", "eth0", identity("db", i, "immutable"))
            XCTAssertEqual(out["ips"]?[0]?["address"]?.string, "10.1.0.1\(i)/24")
            XCTAssertEqual(out["ips"]?[0]?["mac"]?.string, "52:54:00:00:00:1\(i)")
            XCTAssertEqual(out["ips"]?[0]?["vlan"]?.int, 100)
            XCTAssertEqual(out["ips"]?[0]?["gateway"]?.string, "10.1.0.1")
        }
        // Plain containers never get reserved addresses; a MAC the runtime asks for is used when the pool binds none.
        let web = try n.add("web-1", "eth0", ["mac": "02:00:00:AA:BB:01"])
        XCTAssertEqual(web["ips"]?[0]?["address"]?.string, "10.1.0.13/24")
        XCTAssertEqual(web["ips"]?[0]?["mac"]?.string, "02:00:00:aa:bb:01")
        expectError(Self.INVALID, "\"mac\" \"02:00\" is not a MAC address") { try n.add("web-2", "eth0", ["mac": "02:00"]) }
        // Restart of db-1 elsewhere: non-final DEL holds the address, the new container gets it back.
        try n.del("db-1-v1")
        XCTAssertEqual(try n.state("vlan100", "10.1.0.11"), "held")
        XCTAssertEqual(try n.capacity()["held"]?.int, 1)
        let again = try n.add("db-1-v2", "eth0", identity("db", 1, "immutable").setting("node", "node-2").setting("mac", "02:00:00:00:00:99"))
        XCTAssertEqual(again["ips"]?[0]?["address"]?.string, "10.1.0.11/24")
        XCTAssertEqual(again["ips"]?[0]?["mac"]?.string, "52:54:00:00:00:11")  // the pool's binding wins
        XCTAssertEqual(try n.state("vlan100", "10.1.0.11"), "active")
        // Scale-down: final DEL returns the address to reserved, not available.
        try n.del("db-1-v2", final: true)
        XCTAssertEqual(try n.state("vlan100", "10.1.0.11"), "reserved")
        var cap = try n.capacity()
        XCTAssertEqual(cap["reserved"]?.int, 1)
        XCTAssertEqual(cap["held"]?.int, 0)
        XCTAssertEqual(cap["active"]?.int, 3)
        // identity.release after a non-final DEL also returns it to reserved.
        try n.del("db-2-v1")
        XCTAssertEqual(try n.state("vlan100", "10.1.0.12"), "held")
        let rel = try n.admin("identity.release", ["app": "db", "ordinal": 2])
        XCTAssertEqual(rel["released"]?[0]?["addresses"]?[0]?.string, "10.1.0.12")
        XCTAssertEqual(try n.state("vlan100", "10.1.0.12"), "reserved")
        cap = try n.capacity()
        XCTAssertEqual(cap["reserved"]?.int, 2)
        XCTAssertEqual(cap["held"]?.int, 0)
        // db-0 is still attached: identity.release for the whole app skips it.
        let all = try n.admin("identity.release", ["app": "db"])
        XCTAssertEqual(all["skipped"]?[0]?["ordinal"]?.string, "0")
        XCTAssertEqual(try n.state("vlan100", "10.1.0.10"), "active")
    }

    func testOnDeleteReturnsAddressToPreviousState() throws {
        let n = try net(pool: Self.vlan100)
        // onDelete takes from available unless it names an address; a named reserved one goes back to reserved.
        XCTAssertEqual(try n.addIP("a", "eth0", identity("api", 0, "onDelete")), "10.1.0.13")
        XCTAssertEqual(try n.addIP("b", "eth0", identity("api", 1, "onDelete").setting("ips", ["10.1.0.11"])), "10.1.0.11")
        try n.del("a")
        try n.del("b")
        XCTAssertEqual(try n.state("vlan100", "10.1.0.13"), "available")
        XCTAssertEqual(try n.state("vlan100", "10.1.0.11"), "reserved")
        XCTAssertEqual(try n.capacity()["held"]?.int, 0)
    }

    func testPolicyNeverSurvivesFinalDelete() throws {
        let n = try net(pool: Self.vlan100)
        XCTAssertEqual(try n.addIP("cache-0-a", "eth0", identity("cache", 0, "never")), "10.1.0.10")
        try n.del("cache-0-a", final: true)
        XCTAssertEqual(try n.state("vlan100", "10.1.0.10"), "held")
        // The app is recreated: same name, same address and MAC.
        let out = try n.add("cache-0-b", "eth0", identity("cache", 0, "never"))
        XCTAssertEqual(out["ips"]?[0]?["address"]?.string, "10.1.0.10/24")
        XCTAssertEqual(out["ips"]?[0]?["mac"]?.string, "52:54:00:00:00:10")
        try n.del("cache-0-b", final: true)
        // identity.release refuses `never` without force.
        var rel = try n.admin("identity.release", ["app": "cache"])
        XCTAssertEqual(rel["released"]?.array?.count, 0)
        XCTAssertTrue(rel["skipped"]?[0]?["reason"]?.string?.contains("force") ?? false)
        XCTAssertEqual(try n.state("vlan100", "10.1.0.10"), "held")
        rel = try n.admin("identity.release", ["app": "cache", "force": true])
        XCTAssertEqual(rel["released"]?[0]?["addresses"]?[0]?.string, "10.1.0.10")
        XCTAssertEqual(try n.state("vlan100", "10.1.0.10"), "reserved")
    }

    func testKeepSecondsExpiry() throws {
        let n = try net(pool: Self.vlan100)
        XCTAssertEqual(try n.addIP("q-0", "eth0", identity("queue", 0, "immutable", keep: 1)), "10.1.0.10")
        XCTAssertEqual(try n.addIP("q-1", "eth0", identity("queue", 1, "immutable", keep: 60)), "10.1.0.11")
        try n.del("q-0")
        try n.del("q-1")
        XCTAssertEqual(try n.capacity()["held"]?.int, 2)
        Thread.sleep(forTimeInterval: 1.3)
        // Any operation sweeps expired holds first.
        let cap = try n.capacity()
        XCTAssertEqual(cap["held"]?.int, 1)
        XCTAssertEqual(try n.state("vlan100", "10.1.0.10"), "reserved")
        XCTAssertEqual(try n.state("vlan100", "10.1.0.11"), "held")
        // The expired identity starts afresh (lowest reserved); the other one keeps its address.
        XCTAssertEqual(try n.addIP("q-1b", "eth0", identity("queue", 1, "immutable", keep: 60)), "10.1.0.11")
        XCTAssertEqual(try n.addIP("q-0b", "eth0", identity("queue", 0, "immutable", keep: 1)), "10.1.0.10")
    }

    /// Two live containers never share an address: a second ADD of an identity whose address is still attached to
    /// another container is refused (naming it); once that attachment is released, the address moves, as an event.
    func testIdentityIsNotTakenFromALiveAttachment() throws {
        let n = try net(pool: Self.vlan100)
        XCTAssertEqual(try n.addIP("db0-inc2", "eth0", identity("db", 0, "immutable").setting("node", "node-2")), "10.1.0.10")
        expectError(Self.PRECONDITION, "10.1.0.10 is in use by container db0-inc2 (interface eth0, node node-2)") {
            try n.add("db-0-1", "eth0", identity("db", 0, "immutable").setting("node", "node-1"))
        }
        XCTAssertNoThrow(try n.check("db0-inc2"), "the refused ADD took nothing from the live attachment")
        expectError(Self.NOT_FOUND, "no addresses are allocated to container db-0-1") { try n.check("db-0-1") }
        XCTAssertEqual(try n.capacity()["active"]?.int, 1)
        // Released (non-final: held for the identity), the address moves to the new container with its MAC.
        try n.del("db0-inc2")
        XCTAssertEqual(try n.state("vlan100", "10.1.0.10"), "held")
        let out = try n.add("db-0-1", "eth0", identity("db", 0, "immutable").setting("node", "node-1"))
        XCTAssertEqual(out["ips"]?[0]?["address"]?.string, "10.1.0.10/24")
        XCTAssertEqual(out["ips"]?[0]?["mac"]?.string, "52:54:00:00:00:10")
        let moved = try n.store.events(since: 0).filter { $0.type == "identity.moved" }
        XCTAssertEqual(moved.count, 1)
        let data = moved.first?.data ?? .null
        XCTAssertEqual(data["from"], "db0-inc2")
        XCTAssertEqual(data["to"], "db-0-1")
        XCTAssertEqual(data["addresses"], ["10.1.0.10"])
        XCTAssertEqual(data["app"], "db")
        // A stale attachment's DEL after the move releases nothing from the new holder.
        try n.del("db0-inc2", final: true)
        XCTAssertNoThrow(try n.check("db-0-1"))
        XCTAssertEqual(try n.capacity()["active"]?.int, 1)
    }

    /// Reserved means reserved: naming a reserved address without an identity is refused (its bound MAC with it)
    /// unless the request says useReserved.
    func testReservedAddressNeedsIdentityOrUseReserved() throws {
        let n = try net(pool: Self.vlan100)
        expectError(Self.PRECONDITION, "requested address 10.1.0.10 is reserved (pool vlan100") {
            try n.add("plain", "eth0", ["ips": ["10.1.0.10"]])
        }
        XCTAssertEqual(try n.state("vlan100", "10.1.0.10"), "reserved")
        XCTAssertEqual(try n.capacity()["active"]?.int, 0, "a refused ADD changes nothing")
        expectError(Self.INVALID, "\"useReserved\" must be true or false") { try n.add("plain", "eth0", ["ips": ["10.1.0.10"], "useReserved": "yes"]) }
        let forced = try n.add("plain", "eth0", ["ips": ["10.1.0.10"], "useReserved": true])
        XCTAssertEqual(forced["ips"]?[0]?["address"]?.string, "10.1.0.10/24")
        XCTAssertEqual(forced["ips"]?[0]?["mac"]?.string, "52:54:00:00:00:10")
        try n.del("plain")
        XCTAssertEqual(try n.state("vlan100", "10.1.0.10"), "reserved", "back to its previous state")
        XCTAssertEqual(try n.addIP("sts", "eth0", identity("db", 0, "onDelete").setting("ips", ["10.1.0.10"])), "10.1.0.10")
        // An available address may still be named without an identity.
        XCTAssertEqual(try n.addIP("plain2", "eth0", ["ips": ["10.1.0.20"]]), "10.1.0.20")
    }

    /// A pool says how its interface is made (parent interface, delegate plugin); ADD results carry it as "link".
    func testPoolParentAndDelegate() throws {
        let n = try net(pool: Self.vlan100.setting("parent", "eth1").setting("delegate", "macvlan"))
        let out = try n.add("c1")
        XCTAssertEqual(out["link"], ["type": "macvlan", "parent": "eth1", "vlan": 100])
        XCTAssertEqual(try n.admin("pool.list")["pools"]?[0]?["parent"], "eth1")
        XCTAssertEqual(try n.admin("pool.show", ["name": "vlan100"])["pool"]?["delegate"], "macvlan")
        expectError(Self.INVALID, "delegate \"tap\" is unknown: use one of macvlan, ipvlan, bridge, vlan") {
            _ = try n.admin("pool.import", ["name": "vlan100", "delegate": "tap"])
        }
        expectError(Self.INVALID, "parent \"eth1/x\" is not an interface name") {
            _ = try n.admin("pool.import", ["name": "vlan100", "parent": "eth1/x"])
        }
        XCTAssertEqual(try n.admin("pool.show", ["name": "vlan100"])["pool"]?["parent"], "eth1", "a refused import changes nothing")
        // A pool without any of them has no link.
        let plain = try net(pool: ["name": "p", "ranges": [["subnet": "10.2.0.0/24"]]])
        XCTAssertNil(try plain.add("c1")["link"])
    }

    // MARK: - administration

    func testPoolDeleteRefusedWhileActive() throws {
        let n = try net(pool: Self.vlan100)
        try n.add("c1")
        expectError(Self.PRECONDITION, "pool vlan100 has 1 active addresses") { _ = try n.admin("pool.delete", ["name": "vlan100"]) }
        try n.add("c2", "eth0", identity("db", 0, "immutable"))
        try n.del("c2")  // held counts too
        try n.del("c1")
        expectError(Self.PRECONDITION, "pool vlan100 has 1 active addresses") { _ = try n.admin("pool.delete", ["name": "vlan100"]) }
        _ = try n.admin("identity.release", ["app": "db"])
        XCTAssertNoThrow(try n.admin("pool.delete", ["name": "vlan100"]))
        expectError(Self.NOT_FOUND, "pool vlan100 does not exist") { _ = try n.admin("pool.delete", ["name": "vlan100"]) }
        XCTAssertEqual(try n.admin("pool.list")["pools"]?.array?.count, 0)
        XCTAssertEqual(try n.store.kvCount("net1"), 0)
        // Events were emitted with the operations.
        let types = try n.store.events(since: 0).map { $0.type }
        XCTAssertTrue(types.contains("pool.imported"))
        XCTAssertTrue(types.contains("pool.deleted"))
    }

    func testStateSurvivesANewInstance() throws {
        let n = try net(pool: Self.vlan100)
        let a = try n.add("a")
        XCTAssertEqual(try n.addIP("b"), "10.1.0.14")
        try n.add("db", "eth0", identity("db", 0, "immutable"))
        try n.del("db")
        try n.restart()
        XCTAssertEqual(try n.add("a"), a)
        XCTAssertEqual(try n.addIP("c"), "10.1.0.15")
        XCTAssertEqual(try n.addIP("db2", "eth0", identity("db", 0, "immutable")), "10.1.0.10")
        XCTAssertEqual(try n.capacity()["active"]?.int, 4)
        // The configured pool is not re-imported over the live state.
        XCTAssertEqual(try n.admin("pool.list")["pools"]?.array?.count, 1)
    }

    func testAddressMove() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.0.0.0/29"]]])
        XCTAssertEqual(try n.addIP("a"), "10.0.0.2")
        let out = try n.admin("address.move", ["pool": "p", "addresses": ["10.0.0.2", "10.0.0.3-10.0.0.4"], "to": "reserved"])
        XCTAssertEqual(out["moved"]?.array?.compactMap { $0.string }, ["10.0.0.3", "10.0.0.4"])
        XCTAssertEqual(out["skipped"]?[0]?["address"]?.string, "10.0.0.2")
        XCTAssertEqual(try n.addIP("b"), "10.0.0.5")  // .3 and .4 are reserved now
        XCTAssertEqual(try n.capacity()["reserved"]?.int, 2)
        _ = try n.admin("address.move", ["pool": "p", "addresses": ["10.0.0.3"], "to": "available"])
        XCTAssertEqual(try n.addIP("c"), "10.0.0.6")
        XCTAssertEqual(try n.addIP("d"), "10.0.0.3")  // wrap-around finds the one moved back
        expectError(Self.INVALID, "10.0.0.1 is the gateway") {
            _ = try n.admin("address.move", ["pool": "p", "addresses": ["10.0.0.1"], "to": "reserved"])
        }
        XCTAssertTrue(try n.store.events(since: 0).contains { $0.type == "address.moved" })
    }

    func testNodesAndCapacity() throws {
        let n = try net(["pools": [
            ["name": "a", "ranges": [["subnet": "10.1.0.0/24"]], "nodes": ["node-1"]],
            ["name": "b", "ranges": [["subnet": "10.2.0.0/24"]], "nodes": ["node-2"]],
        ]])
        XCTAssertEqual(try n.addIP("c1", "eth0", ["node": "node-2"]), "10.2.0.2")
        XCTAssertEqual(try n.addIP("c2", "eth0", ["node": "node-1"]), "10.1.0.2")
        expectError(Self.PRECONDITION, "pool a is not usable from node node-2") { try n.add("c3", "eth0", ["node": "node-2", "pool": "a"]) }
        expectError(Self.PRECONDITION, "no pool of network net1 is usable from node node-9") { try n.add("c3", "eth0", ["node": "node-9"]) }
        let cap = try n.capacity("node-1")
        XCTAssertEqual(cap["pools"]?.array?.map { $0["name"]?.string ?? "" }, ["a"])
        let list = try n.admin("pool.list")["pools"]?.array ?? []
        XCTAssertEqual(list.map { $0["subnets"]?[0]?.string ?? "" }, ["10.1.0.0/24", "10.2.0.0/24"])
        XCTAssertEqual(list.first?["nodes"]?[0]?.string, "node-1")
        XCTAssertEqual(cap["free"]?.int, 252)
        XCTAssertEqual(try n.capacity()["pools"]?.array?.count, 2)
        // Drain node-1: its attachments are released by policy.
        try n.add("c4", "eth0", ["node": "node-1"])
        let rel = try n.admin("node.release", ["node": "node-1"])
        XCTAssertEqual(rel["released"]?.array?.compactMap { $0["containerID"]?.string }.sorted(), ["c2", "c4"])
        XCTAssertEqual(try n.capacity("node-1")["active"]?.int, 0)
        XCTAssertNoThrow(try n.check("c1"))
    }

    func testPoolImportUpdate() throws {
        let n = try net(pool: ["name": "p", "ranges": [["subnet": "10.0.0.0/29"]]])
        try n.add("a")  // .2
        // Update: new routes, vlan and an extra range; the rest is kept.
        _ = try n.admin("pool.import", ["name": "p", "ranges": [["subnet": "10.0.0.0/29"], ["subnet": "10.0.1.0/29"]], "vlan": 7])
        for c in ["b", "c", "d", "e"] { try n.add(c) }  // .3 - .6
        let out = try n.add("f")
        XCTAssertEqual(out["ips"]?[0]?["address"]?.string, "10.0.1.2/29")
        XCTAssertEqual(out["ips"]?[0]?["vlan"]?.int, 7)
        // Removing a range whose addresses are active is refused, and changes nothing.
        expectError(Self.PRECONDITION, "cannot remove 10.0.1.2") {
            _ = try n.admin("pool.import", ["name": "p", "ranges": [["subnet": "10.0.0.0/29"]]])
        }
        XCTAssertEqual(try n.admin("pool.show", ["name": "p"])["pool"]?["ranges"]?.array?.count, 2)
        // Re-importing the same document is a no-op; reservations follow the list.
        _ = try n.admin("pool.import", ["name": "p", "reserved": ["10.0.1.5"]])
        XCTAssertEqual(try n.state("p", "10.0.1.5"), "reserved")
        _ = try n.admin("pool.import", ["name": "p", "reserved": ["10.0.1.5"]])
        XCTAssertEqual(try n.capacity()["reserved"]?.int, 1)
        _ = try n.admin("pool.import", ["name": "p", "reserved": []])
        XCTAssertEqual(try n.state("p", "10.0.1.5"), "available")
        let cap = try n.capacity()
        XCTAssertEqual(cap["free"]?.int, 4)  // 10 addresses, 6 active
        XCTAssertEqual(cap["active"]?.int, 6)
        // An exclusion lifted below the high-water mark becomes allocatable.
        _ = try n.admin("pool.import", ["name": "p", "exclude": ["10.0.1.3"]])
        try n.del("f")
        try n.add("g")  // .1.4
        try n.add("h")  // .1.5
        try n.add("i")  // .1.6
        try n.add("j")  // .1.2
        expectError(Self.EXHAUSTED, "no IP addresses available") { try n.add("k") }
        _ = try n.admin("pool.import", ["name": "p", "exclude": []])
        XCTAssertEqual(try n.addIP("k"), "10.0.1.3")
    }

    func testUnknownAdminOperation() throws {
        let n = try net(.object([]))
        expectError(Self.UNIMPLEMENTED, "unknown admin operation \"pool.frobnicate\"") { _ = try n.admin("pool.frobnicate") }
        expectError(Self.EXHAUSTED, "has no pools") { _ = try n.call("status", .object([])) }
        expectError(Self.PRECONDITION, "has no pools") { try n.add("c1") }
    }

    func testDefaultPoolAndPoolChoice() throws {
        let n = try net(["defaultPool": "b", "pools": [
            ["name": "a", "ranges": [["subnet": "10.1.0.0/24"]]],
            ["name": "b", "ranges": [["subnet": "10.2.0.0/24"]]],
        ]])
        XCTAssertEqual(try n.addIP("c1"), "10.2.0.2")
        XCTAssertEqual(try n.addIP("c2", "eth0", ["pool": "a"]), "10.1.0.2")
        XCTAssertEqual(try n.addIP("c3", "eth0", ["ips": ["10.1.0.77"]]), "10.1.0.77")  // the pool holding the address
        // An unknown pool is a bad request, not NOT_FOUND (which CNI callers read as "unknown container").
        expectError(Self.INVALID, "the requested pool zz does not exist in network net1 (pools: a, b)") { try n.add("c4", "eth0", ["pool": "zz"]) }
    }

    /// Allocation does a bounded amount of work however many addresses are in use: the number of keys it
    /// writes is constant, and a large in-use prefix of the range is never re-walked.
    // MARK: - add_batch (ABI 1.1)

    /// Every key and value of the plugin's namespace, in key order.
    func namespace(_ n: Net) throws -> [String] {
        try n.ex.runSync {
            let s = try n.store.prepare("SELECT key, value FROM kv WHERE ns=?1 ORDER BY key")
            s.bind(1, "net1")
            var out: [String] = []
            while try s.step() { out.append(s.text(0) + " = " + s.text(1)) }
            return out
        }
    }

    /// add_batch gives exactly what add gives one item at a time, in results and in the namespace left behind: on a
    /// history with released (free/) addresses, reserved addresses with bound MACs, a held identity, two pools, dual
    /// stack, requested addresses and nodes.
    func testAddBatchMatchesAddOneAtATime() throws {
        let config: JSON = ["pools": [Self.vlan100,
                                      ["name": "ds", "ranges": [["subnet": "10.5.0.0/28"], ["subnet": "fd05::/124"]], "exclude": ["10.5.0.4"],
                                       "nodes": ["n1", "n2"]]],
                            "defaultPool": "vlan100"]
        let one = try net(config), batch = try net(config)
        for n in [one, batch] {  // the same history on both
            for i in 0..<6 { try n.add("h\(i)") }
            try n.del("h1"); try n.del("h4")                                   // free/ entries behind the cursor
            try n.add("db-0-v1", "eth0", identity("db", 0, "immutable"))      // takes reserved .10
            try n.del("db-0-v1")                                               // held
            try n.add("d0", "eth0", ["pool": "ds", "node": "n1"])
        }
        let items: [JSON] = [
            ["containerID": "a1"],
            ["containerID": "a2", "node": "n7"],
            ["containerID": "db-0-v2", "identity": ["app": "db", "ordinal": 0, "releasePolicy": "immutable"]],  // the held one
            ["containerID": "db-1-v1", "identity": ["app": "db", "ordinal": 1, "releasePolicy": "never"]],      // reserved .11
            ["containerID": "a3", "ips": ["10.1.0.150"]],
            ["containerID": "a3", "ifname": "net1", "pool": "ds", "node": "n2"],
            ["containerID": "a4", "pool": "ds", "node": "n1", "ips": ["fd05::9"]],
            ["containerID": "a5", "mac": "02:00:00:00:00:05"],
        ] + (0..<40).map { ["containerID": .string("bulk-\($0)"), "node": "n1"] }
        var singly: [JSON] = []
        for item in items { singly.append(try one.call("add", item)) }
        let out = try batch.call("add_batch", ["items": .array(items)])
        XCTAssertEqual(out["results"]?.array ?? [], singly)
        XCTAssertEqual(try namespace(batch), try namespace(one))
        // And they go on alike: a repeat answers from the record, the next allocation follows the same cursor.
        let again = try batch.call("add_batch", ["items": [items[0], ["containerID": "z1"]]])
        XCTAssertEqual(again["results"]?[0], singly[0])
        XCTAssertEqual(again["results"]?[1], try one.add("z1"))
        XCTAssertEqual(try namespace(batch), try namespace(one))
    }

    /// All or nothing: an item that cannot be added fails the whole call, naming the item, and the call's writes are
    /// discarded (the host re-runs the items one at a time).
    func testAddBatchIsAllOrNothing() throws {
        let n = try net(pool: ["name": "tiny", "ranges": [["subnet": "10.6.0.0/29"]]])  // .2-.6
        try n.add("first")
        let before = try namespace(n)
        expectError(Self.EXISTS, "items[2]: requested address 10.6.0.2 is already in use by container first") {
            _ = try n.call("add_batch", ["items": [["containerID": "b1"], ["containerID": "b2"], ["containerID": "b3", "ips": ["10.6.0.2"]]]])
        }
        expectError(Self.EXHAUSTED, "items[4]: no IP addresses available in pool tiny") {
            _ = try n.call("add_batch", ["items": .array((0..<5).map { ["containerID": .string("x\($0)")] })])
        }
        expectError(Self.INVALID, "items[1] must be a JSON object") { _ = try n.call("add_batch", ["items": [["containerID": "y"], "y2"]]) }
        expectError(Self.INVALID, "items[0]: \"containerID\" is required") { _ = try n.call("add_batch", ["items": [["ifname": "eth0"]]]) }
        expectError(Self.INVALID, "\"items\" must be an array") { _ = try n.call("add_batch", ["items": "x"]) }
        XCTAssertEqual(try namespace(n), before, "a failed add_batch leaves nothing behind")
        XCTAssertEqual(try n.addIP("after"), "10.6.0.3")
    }

    func testAllocationDoesNotWalkAddressesInUse() throws {
        let n = try net(pool: ["name": "big", "ranges": [["subnet": "10.8.0.0/16"]]])
        for i in 0..<300 { try n.add("c\(i)") }
        // Release a few early ones: they go to the free index; the next allocations continue at the frontier.
        for i in [0, 1, 2] { try n.del("c\(i)") }
        let before = try n.store.kvCount("net1")
        XCTAssertEqual(try n.addIP("x1"), "10.8.1.46")  // 300 addresses from .0.2 on: the next is .1.46
        XCTAssertEqual(try n.store.kvCount("net1") - before, 2)  // the attachment and one address record (free/ untouched)
    }

    /// A seeded random mix of operations on a small dual-stack pool, checking after each one that the counters
    /// agree with the address records and that no address is handed to two live attachments; at the end, that
    /// exactly `free` attachments can still be served.
    func testRandomisedInvariants() throws {
        let pool: JSON = ["name": "r", "ranges": [["subnet": "10.3.0.0/28"], ["subnet": "fd00::/124"]],
                          "reserved": ["10.3.0.5", "10.3.0.6", "fd00::5"], "exclude": ["10.3.0.9"]]
        let n = try net(pool: pool)
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        func rnd(_ k: Int) -> Int {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return Int((seed >> 33) % UInt64(k))
        }
        var live: [String: [String]] = [:]       // cid -> addresses
        var attachedOrdinal: [Int: String] = [:]  // ordinal -> cid
        var next = 0
        let allowed: Set<Int32> = [Self.EXISTS, Self.INVALID, Self.EXHAUSTED, Self.PRECONDITION]
        func attempt(_ body: () throws -> Void) throws {
            do { try body() } catch let e as BerthError where allowed.contains(e.status.rawValue) {}
        }
        func verify(_ step: Int) throws {
            let show = try n.admin("pool.show", ["name": "r"])
            var byState: [String: Int] = [:]
            for a in show["addresses"]?.array ?? [] { byState[a["state"]?.string ?? "?", default: 0] += 1 }
            let cap = try n.capacity()
            for st in ["reserved", "active", "held"] {
                XCTAssertEqual(cap[st]?.int, byState[st] ?? 0, "step \(step): \(st) counter vs records")
            }
            XCTAssertEqual(cap["active"]?.int, live.values.reduce(0) { $0 + $1.count }, "step \(step): active vs live attachments")
        }
        for step in 0..<400 {
            switch rnd(10) {
            case 0, 1, 2:
                let cid = "p\(next)"; next += 1
                try attempt {
                    let out = try n.add(cid)
                    live[cid] = (out["ips"]?.array ?? []).compactMap { $0["address"]?.string }
                }
            case 3:
                let cid = "n\(next)"; next += 1
                let ip = rnd(2) == 0 ? "10.3.0.\(1 + rnd(15))" : "fd00::\(String(1 + rnd(15), radix: 16))"
                try attempt {
                    let out = try n.add(cid, "eth0", ["ips": [.string(ip)]])
                    live[cid] = (out["ips"]?.array ?? []).compactMap { $0["address"]?.string }
                }
            case 4:
                // Also while the ordinal is still attached (a stale attachment): never two holders of one address.
                let ord = rnd(4)
                let cid = "s\(ord)-\(next)"; next += 1
                let policy = ["onDelete", "immutable", "never"][rnd(3)]
                try attempt {
                    let out = try n.add(cid, "eth0", identity("s", ord, policy))
                    live[cid] = (out["ips"]?.array ?? []).compactMap { $0["address"]?.string }
                    attachedOrdinal[ord] = cid
                }
            case 5, 6:
                guard let cid = live.keys.sorted().dropFirst(rnd(max(1, live.count))).first else { continue }
                try n.del(cid, final: rnd(2) == 0)
                live[cid] = nil
                if let o = attachedOrdinal.first(where: { $0.value == cid }) { attachedOrdinal[o.key] = nil }
            case 7:
                _ = try n.admin("identity.release", ["app": "s", "force": .bool(rnd(2) == 0)])
            case 8 where rnd(3) == 0:
                // Re-import with a changed exclusion and reserved list (refused while an excluded address is in use).
                let exclude: [JSON] = rnd(2) == 0 ? ["10.3.0.9"] : ["10.3.0.9", "10.3.0.12-10.3.0.13"]
                let reserved: [JSON] = rnd(2) == 0 ? ["10.3.0.5", "10.3.0.6", "fd00::5"] : ["10.3.0.7", "fd00::6"]
                do { _ = try n.admin("pool.import", ["name": "r", "exclude": .array(exclude), "reserved": .array(reserved)]) }
                catch let e as BerthError where e.status.rawValue == Self.PRECONDITION {}
            case 8:
                _ = try n.admin("address.move", ["pool": "r", "addresses": [.string("10.3.0.\([2, 3, 4, 5, 6, 7, 8, 10][rnd(8)])")],
                                                 "to": rnd(2) == 0 ? "reserved" : "available"])
            default:
                if rnd(4) == 0 {
                    let keep = live.keys.filter { _ in rnd(2) == 0 }
                    let out = try n.call("gc", ["valid": .array(keep.map { ["containerID": .string($0), "ifname": "eth0"] })])
                    for r in out["released"]?.array ?? [] {
                        let cid = r["containerID"]?.string ?? ""
                        live[cid] = nil
                        if let o = attachedOrdinal.first(where: { $0.value == cid }) { attachedOrdinal[o.key] = nil }
                    }
                } else {
                    try n.restart()
                }
            }
            // No address belongs to two live attachments, and every live attachment still holds its addresses.
            if step % 20 == 0 { for cid in live.keys { XCTAssertNoThrow(try n.check(cid), "step \(step): \(cid) lost its addresses") } }
            var seen: [String: String] = [:]
            for (cid, addrs) in live {
                for a in addrs {
                    XCTAssertNil(seen[a], "step \(step): \(a) given to both \(seen[a] ?? "") and \(cid)")
                    seen[a] = cid
                }
            }
            try verify(step)
        }
        // Drain everything, make every address available, and check that `free` is exactly what can be served.
        for cid in live.keys { try n.del(cid, final: true) }
        live = [:]
        _ = try n.admin("identity.release", ["app": "s", "force": true])
        _ = try n.admin("pool.import", ["name": "r", "exclude": ["10.3.0.9"]])
        _ = try n.admin("address.move", ["pool": "r", "addresses": ["10.3.0.2-10.3.0.8", "10.3.0.10-10.3.0.14", "fd00::2-fd00::f"], "to": "available"])
        let cap = try n.capacity()
        XCTAssertEqual(cap["free"]?.int, 12)  // 10.3.0.2-.14 minus the excluded .9
        XCTAssertEqual(cap["active"]?.int, 0)
        XCTAssertEqual(cap["held"]?.int, 0)
        XCTAssertEqual(cap["reserved"]?.int, 0)
        var served = Set<String>()
        for i in 0..<12 {
            let out = try n.add("final-\(i)")
            for a in out["ips"]?.array ?? [] { XCTAssertTrue(served.insert(a["address"]?.string ?? "").inserted) }
        }
        expectError(Self.EXHAUSTED, "no IP addresses available in pool r") { try n.add("final-x") }
        XCTAssertEqual(try n.capacity()["free"]?.int, 0)
    }
}
