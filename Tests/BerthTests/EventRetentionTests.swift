// Event retention through a real berthd: the log is compacted to `events.retain` events and `events.maxAgeSeconds`
// in the background, /metrics counts what was dropped, and a reader asking for events that are gone gets a 410
// naming the oldest revision still kept, never a silent gap.
import BerthWire
import Foundation
import XCTest

final class EventRetentionTests: XCTestCase {
    func events(_ d: Daemon, since: Int = 0) throws -> (Int, JSON) { try d.request("GET", "/v1/events?since=\(since)&limit=10000") }

    /// Polls until `cond` holds (up to 20 s).
    func eventually(_ what: String, _ cond: () throws -> Bool) throws {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if try cond() { return }
            usleep(100_000)
        }
        XCTFail("timed out waiting for: \(what)")
    }

    func testLogIsCompactedToRetainCountAndOldReadsAreRefused() throws {
        let d = try Daemon(plugins: [["name": "net1", "path": .string(Paths.plugin("ipam-pool")),
                                      "config": ["pools": [["name": "p", "ranges": [["subnet": "10.91.0.0/23"]]]]]]],
                           tag: "retain", extra: [("events", ["retain": 100])])
        for b in 0..<3 {
            let items: [JSON] = (0..<100).map { ["containerID": .string("c\(b)-\($0)")] }
            XCTAssertEqual(try d.request("POST", "/v1/networks/net1/attachments/batch", ["attachments": .array(items)]).0, 200)
        }
        var oldest = 0
        try eventually("the log compacted to 100 events") {
            let evs = try events(d).1["events"]?.array ?? []
            oldest = evs.first?["rev"]?.int ?? 0
            return evs.count == 100
        }
        XCTAssertGreaterThan(oldest, 200)
        let (st, body) = try events(d, since: 5)
        XCTAssertEqual(st, 410, body.serialized)
        XCTAssertEqual(body["oldestRevision"]?.int, oldest, body.serialized)
        XCTAssertTrue(body["error"]?.string?.contains("since=\(oldest - 1)") ?? false, body.serialized)
        XCTAssertEqual(try events(d, since: oldest - 1).1["events"]?.array?.count, 100, "from just before the oldest: all of them")
        let metrics = try UnixHTTPConnection(path: d.socket).request("GET", "/metrics").text
        let compacted = metrics.split(separator: "\n").first { $0.hasPrefix("berth_events_compacted_total ") }
        XCTAssertEqual(compacted.flatMap { Int($0.split(separator: " ")[1]) }, oldest - 1, metrics)
        XCTAssertTrue(metrics.contains("berth_events_oldest_revision \(oldest)"), metrics)
        // The watch stream refuses an old cursor the same way.
        let r = try UnixHTTPConnection(path: d.socket).request("GET", "/v1/events?since=5&watch=true")
        XCTAssertEqual(r.status, 410, r.text)
        // The state is intact: every attachment is still there.
        XCTAssertEqual(try d.request("GET", "/v1/networks/net1/attachments").1["attachments"]?.array?.count, 300)
        // After a restart the window and the next revisions carry on.
        d.stop()
        try d.start()
        XCTAssertEqual(try events(d, since: 5).0, 410)
        XCTAssertEqual(try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "after"]).0, 200)
        let last = try events(d).1["events"]?.array?.last?["rev"]?.int ?? 0
        XCTAssertGreaterThan(last, oldest + 99)
    }

    func testLogIsCompactedByAge() throws {
        let d = try Daemon(plugins: [], tag: "retainage", extra: [("events", ["maxAgeSeconds": 1])])
        for i in 0..<5 { XCTAssertEqual(try d.request("PUT", "/v1/nodes/n\(i)", [:]).0, 201) }
        try eventually("every event older than a second dropped") { (try events(d).1["events"]?.array ?? []).isEmpty }
        // An empty log still knows its revision: new events carry on from it, and old cursors get a 410.
        XCTAssertEqual(try events(d, since: 1).0, 410)
        XCTAssertEqual(try d.request("PUT", "/v1/nodes/n9", [:]).0, 201)
        let evs = try events(d).1["events"]?.array ?? []
        XCTAssertGreaterThan(evs.first?["rev"]?.int ?? 0, 5, evs.description)
    }

    func testRetentionKeysAreValidated() throws {
        let dir = tempDir("retainkeys")
        for (events, mentions) in [(["retain": 5] as JSON, "events.retain"), (["maxAgeSeconds": 0], "events.maxAgeSeconds"),
                                   (["retain": "lots"], "events.retain"), (["keep": 1], "keep")] {
            let file = dir + "/site.json"
            try (["site": "x", "events": events] as JSON).serialized.write(toFile: file, atomically: true, encoding: .utf8)
            let (rc, out, err) = try runTool(Paths.bin + "/berthd", ["--site", file, "--check"])
            XCTAssertNotEqual(rc, 0, events.serialized)
            XCTAssertTrue((out + err).contains(mentions), "\(events.serialized): \(out) \(err)")
        }
        let file = dir + "/site.json"
        try (["site": "x"] as JSON).serialized.write(toFile: file, atomically: true, encoding: .utf8)
        let (rc, out, _) = try runTool(Paths.bin + "/berthd", ["--site", file, "--check"])
        XCTAssertEqual(rc, 0, out)
        XCTAssertTrue(out.contains("\"retain\": 100000"), out)
    }
}
