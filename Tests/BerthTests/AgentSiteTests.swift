// The site's `agent` section (the node agent's settings): defaults, every key read, bad values refused naming the key.
@testable import BerthPlugins
import BerthWire
import XCTest

final class AgentSiteTests: XCTestCase {
    func testDefaultsAndEveryKey() throws {
        let none = try SiteConfig.parse(Array(#"{"site": "s"}"#.utf8), baseDir: "/etc/berth")
        XCTAssertEqual(none.agent, AgentSite())
        XCTAssertEqual(none.agent.bridge, "berth0")
        XCTAssertEqual(none.agent.tickSeconds, 2)
        let all = try SiteConfig.parse(Array(#"""
        {"agent": {"runtime": "oci", "tickSeconds": 0.5, "bridge": "br-apps", "cniPath": "/opt/cni/bin", "stateDir": "agent",
                   "backoffSeconds": 1, "maxBackoffSeconds": 60}}
        """#.utf8), baseDir: "/etc/berth")
        XCTAssertEqual(all.agent.runtime, "oci")
        XCTAssertEqual(all.agent.tickSeconds, 0.5)
        XCTAssertEqual(all.agent.bridge, "br-apps")
        XCTAssertEqual(all.agent.cniPath, "/opt/cni/bin")
        XCTAssertEqual(all.agent.stateDir, "/etc/berth/agent", "relative to the site file's directory")
        XCTAssertEqual(all.agent.backoffSeconds, 1)
        XCTAssertEqual(all.agent.maxBackoffSeconds, 60)
        XCTAssertEqual(all.json["agent"]?["bridge"], "br-apps")
    }

    func testBadValuesAreRefusedNamingTheKey() {
        for (text, key) in [(#"{"agent": {"tickSeconds": 0}}"#, "agent.tickSeconds"), (#"{"agent": {"bridge": "a-bridge-name-too-long"}}"#, "agent.bridge"),
                            (#"{"agent": {"bridge": "br 0"}}"#, "agent.bridge"), (#"{"agent": {"restart": 1}}"#, "agent"),
                            (#"{"agent": {"backoffSeconds": -1}}"#, "agent.backoffSeconds")] {
            XCTAssertThrowsError(try SiteConfig.parse(Array(text.utf8), baseDir: "/tmp"), text) { e in
                XCTAssertTrue("\(e)".contains(key), "\(text): \(e)")
            }
        }
    }

    func testChangingTheAgentAtRunTimeSaysItNeedsARestart() throws {
        let cur = try SiteConfig.parse(Array(#"{"agent": {"tickSeconds": 2}}"#.utf8), baseDir: "/tmp")
        let new = try SiteConfig.parse(Array(#"{"agent": {"tickSeconds": 5}}"#.utf8), baseDir: "/tmp")
        XCTAssertEqual(PluginHost.restartOnly(cur, running: cur), [])
        XCTAssertTrue(PluginHost.restartOnly(new, running: cur).contains { $0.hasPrefix("agent:") }, "\(PluginHost.restartOnly(new, running: cur))")
    }
}
