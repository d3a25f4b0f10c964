// berth-cni's input checks through the real binary against a real berthd: GC without a well-formed valid list,
// ids and interface names (blank, over-long, not UTF-8), requested prefixes in CNI_ARGS, the ipam section's type,
// and the CNI spec's error codes for each (4 environment, 6 decode, 7 configuration).
import BerthWire
import Foundation
import XCTest

final class CNIInputTests: XCTestCase {
    var cni: String { Paths.bin + "/berth-cni" }

    func env(_ cmd: String, _ cid: String = "c1", ifname: String = "eth0", extra: [String: String] = [:]) -> [String: String] {
        var e = ["CNI_COMMAND": cmd, "CNI_CONTAINERID": cid, "CNI_NETNS": "/var/run/netns/none", "CNI_IFNAME": ifname, "CNI_PATH": "/usr/lib/cni"]
        for (k, v) in extra { e[k] = v }
        return e
    }

    func conf(_ d: Daemon, version: String = "1.1.0") -> JSON {
        ["cniVersion": .string(version), "name": "berthnet", "type": "berth-cni",
         "ipam": ["type": "berth-cni", "socket": .string(d.socket), "network": "net1"]]
    }

    func active(_ d: Daemon) throws -> Int { try d.request("GET", "/v1/networks/net1/attachments").1["attachments"]?.array?.count ?? -1 }

    /// Runs berth-cni; asserts the exit code and that stdout is a CNI error with the same code.
    func expectCode(_ code: Int32, _ e: [String: String], _ stdin: String, _ what: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let (rc, out, err) = try runTool(cni, [], env: e, stdin: stdin)
        XCTAssertEqual(rc, code, "\(what): \(out) \(err)", file: file, line: line)
        XCTAssertEqual((try? JSON.parse(out))?["code"]?.int, Int(code), "\(what): \(out)", file: file, line: line)
    }

    func testGCWithoutAWellFormedValidListReleasesNothing() throws {
        let d = try netDaemon("cnigc")
        for c in ["c1", "c2"] {
            let (rc, out, _) = try runTool(cni, [], env: env("ADD", c), stdin: conf(d).serialized)
            XCTAssertEqual(rc, 0, out)
        }
        let gc = ["CNI_COMMAND": "GC"]
        try expectCode(7, gc, conf(d).serialized, "GC with no valid-attachments")
        for bad: JSON in ["c1", [["ifname": "eth0"]], [["containerID": "c1"]], [["containerID": 1, "ifname": "eth0"]],
                          [["containerID": "c1", "ifname": ["eth0"]]], ["c1"], [["containerID": "", "ifname": "eth0"]]] {
            try expectCode(7, gc, conf(d).setting("cni.dev/valid-attachments", bad).serialized, "GC with valid-attachments \(bad.serialized)")
        }
        XCTAssertEqual(try active(d), 2, "a refused GC released nothing")
        // The API's GC refuses malformed entries the same way.
        XCTAssertEqual(try d.request("POST", "/v1/networks/net1/gc", ["valid": [["containerID": "c1", "ifname": 3]]]).0, 400)
        XCTAssertEqual(try active(d), 2)
        // A well-formed list (even an empty one) is a GC.
        let (rc, out, _) = try runTool(cni, [], env: gc, stdin: conf(d).setting("cni.dev/valid-attachments", [["containerID": "c1", "ifname": "eth0"]]).serialized)
        XCTAssertEqual(rc, 0, out)
        XCTAssertEqual(try active(d), 1)
    }

    func testIdsAndInterfaceNamesGetTheSpecsCodes() throws {
        let d = try netDaemon("cniids")
        let c = conf(d).serialized
        try expectCode(4, env("ADD", "   "), c, "blank CNI_CONTAINERID")
        try expectCode(4, env("ADD", String(repeating: "c", count: 300)), c, "over-long CNI_CONTAINERID")
        try expectCode(4, env("ADD", "c\u{1}x"), c, "a control character in CNI_CONTAINERID")
        for ifn in ["0123456789abcdef", ".", "a:b", "a b", "   "] { try expectCode(4, env("ADD", ifname: ifn), c, "CNI_IFNAME \"\(ifn)\"") }
        try expectCode(4, env("DEL", String(repeating: "c", count: 300)), c, "over-long CNI_CONTAINERID on DEL")
        try expectCode(4, env("ADD", extra: ["CNI_ARGS": "IP=10.99.0.5/99"]), c, "IP= with prefix /99")
        try expectCode(4, env("ADD", extra: ["CNI_ARGS": "IP=10.99.0.300"]), c, "IP= not an address")
        // The prefix must agree with the pool's (/24).
        let (rcp, outp, _) = try runTool(cni, [], env: env("ADD", extra: ["CNI_ARGS": "IP=10.99.0.5/16"]), stdin: c)
        XCTAssertEqual(rcp, 7, outp)
        // Bytes that are not UTF-8 in the environment (through bash, which passes them as they are).
        let (rc, out, _) = try runTool("/bin/bash", ["-c", "CNI_CONTAINERID=$'ctr\\xff' CNI_COMMAND=ADD CNI_NETNS=/x CNI_IFNAME=eth0 exec \"$0\"", cni], stdin: c)
        XCTAssertEqual(rc, 4, out)
        XCTAssertTrue(out.contains("CNI_CONTAINERID") && out.contains("UTF-8"), out)
        // A NUL or a byte that is not UTF-8 in the configuration: decode failure, 6.
        try expectCode(6, env("ADD"), c.replacingOccurrences(of: "\"berthnet\"", with: "\"berth\\u0000net\""), "NUL in the configuration")
        let file = d.dir + "/bad.conf"
        try Data(Array(c.replacingOccurrences(of: "berthnet", with: "berth~net").utf8).map { $0 == UInt8(ascii: "~") ? 0xFF : $0 }).write(to: URL(fileURLWithPath: file))
        let (rc6, out6, _) = try runTool("/bin/bash", ["-c", "exec \"$0\" < \"$1\"", cni, file],
                                         env: env("ADD"))
        XCTAssertEqual(rc6, 6, out6)
        XCTAssertEqual(try active(d), 0, "nothing was attached")
        // Still fine: a plain ADD.
        let (rc0, out0, _) = try runTool(cni, [], env: env("ADD", "good"), stdin: c)
        XCTAssertEqual(rc0, 0, out0)
    }

    func testIPAMSectionMustBeAnObject() throws {
        let d = try netDaemon("cniipam")
        for ipam: JSON in ["berth-cni", 5, ["berth-cni"], .null] {
            try expectCode(7, env("ADD"), conf(d).setting("ipam", ipam).serialized, "ipam \(ipam.serialized)")
        }
        for (k, v): (String, JSON) in [("network", 5), ("socket", ["x"]), ("pool", true), ("node", 1)] {
            let ipam = conf(d)["ipam"]!.setting(k, v)
            try expectCode(7, env("ADD"), conf(d).setting("ipam", ipam).serialized, "ipam.\(k) \(v.serialized)")
        }
        // Through berthd's /v1/cni directly too (what berth-cni forwards).
        let (st, r) = try d.request("POST", "/v1/cni", ["command": "ADD", "containerID": "c1", "ifname": "eth0", "config": conf(d).setting("ipam", "x")])
        XCTAssertEqual(st, 200)
        XCTAssertEqual(r["exitCode"], 7, r.serialized)
        XCTAssertEqual(try active(d), 0)
    }
}
