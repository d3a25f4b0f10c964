// The berth CLI as an operator uses it, against a real berthd: defaults that follow the site, -o table|json|yaml
// on every command, commands for what was API-only, a remote berthd over TCP with a token, --version and help,
// every validation problem listed, and ids percent-encoded on the way (and decoded by berthd).
import BerthWire
import Foundation
import XCTest

/// Runs the real `berth` binary; `env` adds to (or, with a nil value, removes from) this process's environment.
func berth(_ args: [String], env: [String: String?] = [:], stdin: String? = nil) throws -> (Int32, String, String) {
    var e = ProcessInfo.processInfo.environment
    for k in ["BERTH_SOCKET", "BERTH_SERVER", "BERTH_TOKEN", "BERTH_TOKEN_FILE", "BERTH_NETWORK", "BERTH_STORAGE"] { e[k] = nil }
    for (k, v) in env { e[k] = v }
    return try runTool(Paths.bin + "/berth", args, env: e, stdin: stdin)
}

/// YAML read back by a real YAML parser (Debian's python3-yaml), as JSON.
func yamlToJSON(_ text: String) throws -> JSON {
    let (rc, out, err) = try runTool("/usr/bin/python3", ["-c", "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))"], stdin: text)
    guard rc == 0 else { throw NSError(domain: "yaml", code: Int(rc), userInfo: [NSLocalizedDescriptionKey: "python3-yaml could not read:\n\(text)\n\(err)"]) }
    return try JSON.parse(out)
}

let poolNet2: JSON = ["name": "p2", "ranges": [["subnet": "10.98.0.0/24"]]]

final class CLITests: XCTestCase {
    func ipam(_ name: String, _ pool: JSON) -> JSON {
        ["name": .string(name), "path": .string(Paths.plugin("ipam-pool")), "config": ["pools": [pool]]]
    }

    func storage(_ name: String) -> JSON {
        ["name": .string(name), "path": .string(Paths.plugin("storage-local")),
         "config": ["root": .string(tempDir("cli-vols")), "capacityBytes": .number(Double(1 << 30)), "nodes": ["node-a"]]]
    }

    // MARK: 1. defaults that follow the site; volumes by name

    func testDefaultsFollowTheSiteAndVolumesGoByName() throws {
        let one = try Daemon(plugins: [ipam("net1", poolNet1), storage("local")], tag: "cli-one")
        let s = ["--socket", one.socket]
        var (rc, out, err) = try berth(["attachments", "add", "--container", "c1"] + s)
        XCTAssertEqual(rc, 0, err)
        XCTAssertTrue(out.contains("10.99.0.2/24"), "the only network is the default: \(out)")
        (rc, out, err) = try berth(["pools", "list"] + s)
        XCTAssertEqual(rc, 0, err)
        XCTAssertTrue(out.contains("p1"), out)

        (rc, out, err) = try berth(["volumes", "create", "data", "--size", "1Mi", "-o", "json"] + s)
        XCTAssertEqual(rc, 0, err)
        let id = try XCTUnwrap(try JSON.parse(out)["volumeId"]?.string)
        XCTAssertNotEqual(id, "data", "the test needs an id that differs from the name")
        (rc, out, err) = try berth(["volumes", "show", "data", "-o", "json"] + s)
        XCTAssertEqual(rc, 0, err)
        XCTAssertEqual(try JSON.parse(out)["volumeId"]?.string, id, "a volume is found by its name")
        (rc, out, err) = try berth(["volumes", "expand", "data", "--size", "2Mi"] + s)
        XCTAssertEqual(rc, 0, err)
        XCTAssertTrue(out.contains("2Mi"), out)
        (rc, out, err) = try berth(["volumes", "snapshot", "create", "snap1", "--volume", "data", "-o", "json"] + s)
        XCTAssertEqual(rc, 0, err)
        XCTAssertEqual(try JSON.parse(out)["sourceVolumeId"]?.string, id)
        let sid = try XCTUnwrap(try JSON.parse(out)["snapshotId"]?.string)
        (rc, out, err) = try berth(["volumes", "snapshot", "show", sid, "-o", "json"] + s)
        XCTAssertEqual(rc, 0, err)
        XCTAssertEqual(try JSON.parse(out)["sourceVolumeId"]?.string, id)
        (rc, out, err) = try berth(["volumes", "snapshot", "delete", sid] + s)
        XCTAssertEqual(rc, 0, err)
        (rc, out, err) = try berth(["volumes", "validate", "data", "-o", "json"] + s)
        XCTAssertEqual(rc, 0, err)
        XCTAssertFalse(try JSON.parse(out).isNull, out)
        (rc, _, err) = try berth(["volumes", "unpublish", "data", "--step", "stage", "--target", "/x"] + s)
        XCTAssertTrue(rc != 0 && err.contains("--step stage takes --node"), err)
        (rc, out, err) = try berth(["volumes", "delete", "data"] + s)
        XCTAssertEqual(rc, 0, err)
        XCTAssertEqual(try one.request("GET", "/v1/storage/local/volumes").1["volumes"]?.array?.count, 0, "deleted by name")

        // Two networks: the command says which exist and how to choose; either way of choosing works.
        let two = try Daemon(plugins: [ipam("net1", poolNet1), ipam("net2", poolNet2)], tag: "cli-two")
        (rc, out, err) = try berth(["pools", "list", "--socket", two.socket])
        XCTAssertNotEqual(rc, 0)
        XCTAssertTrue(err.contains("2 network plugins loaded (net1, net2)") && err.contains("--network NAME") && err.contains("BERTH_NETWORK=NAME"), err)
        (rc, out, err) = try berth(["pools", "list", "--socket", two.socket], env: ["BERTH_NETWORK": "net2"])
        XCTAssertEqual(rc, 0, err)
        XCTAssertTrue(out.contains("p2") && !out.contains("p1"), out)
        (rc, out, err) = try berth(["pools", "list", "--network", "net1", "--socket", two.socket], env: ["BERTH_NETWORK": "net2"])
        XCTAssertTrue(out.contains("p1") && !out.contains("p2"), "the option beats the variable: \(out)")

        // None: it says so, and no storage either.
        let none = try Daemon(plugins: [["name": "hello", "path": .string(Paths.plugin("hello"))]], tag: "cli-none")
        (rc, _, err) = try berth(["pools", "list", "--socket", none.socket])
        XCTAssertNotEqual(rc, 0)
        XCTAssertTrue(err.contains("no network plugin loaded") && err.contains("--network NAME"), err)
        (rc, _, err) = try berth(["volumes", "list", "--socket", none.socket])
        XCTAssertNotEqual(rc, 0)
        XCTAssertTrue(err.contains("no storage plugin loaded") && err.contains("--storage NAME") && err.contains("BERTH_STORAGE=NAME"), err)
    }

    // MARK: 2. -o table|json|yaml everywhere

    func testEveryCommandHonoursTheOutputFormat() throws {
        let d = try Daemon(plugins: [ipam("net1", poolNet1)], tag: "cli-output")
        let s = ["--socket", d.socket]
        XCTAssertEqual(try berth(["attachments", "add", "--container", "c1", "--node", "n1"] + s).0, 0)
        XCTAssertEqual(try berth(["nodes", "add", "n1", "--cpu", "2", "--memory", "1Gi"] + s).0, 0)
        let commands: [[String]] = [
            ["pools", "show", "p1"], ["attachments", "capacity"], ["attachments", "check", "--container", "c1"], ["get", "nodes", "n1"],
            ["get", "kinds"], ["pools", "list"], ["status"], ["site", "show"], ["plugins", "show", "net1"], ["events", "--type", "network"],
        ]
        for c in commands {
            let (rc, json, err) = try berth(c + ["-o", "json"] + s)
            XCTAssertEqual(rc, 0, "\(c): \(err)")
            let parsed = try JSON.parse(json)
            let (rc2, yml, err2) = try berth(c + ["-o", "yaml"] + s)
            XCTAssertEqual(rc2, 0, "\(c): \(err2)")
            XCTAssertTrue(try yamlToJSON(yml) == parsed, "\(c): the YAML says what the JSON says:\n\(yml)\n\(json)")
            let (rc3, tbl, _) = try berth(c + s)
            XCTAssertEqual(rc3, 0)
            if c != ["site", "show"] { XCTAssertFalse(tbl.hasPrefix("{"), "\(c): -o table prints a table, not JSON:\n\(tbl)") }
        }
        // Strings that YAML would read as something else (a bool, a number, null, a mapping, a comment, a list) stay strings.
        let tricky = ["yes", "12", "null", "x: y", "#h", "[z]", "1.5", "~", "on", "a'b\"c", "*y", "!t", "@q", "{b}", "&x", "%p"]
        for cid in tricky { XCTAssertEqual(try berth(["attachments", "add", "--container", cid] + s).0, 0, cid) }
        let (rc, yml, err) = try berth(["attachments", "list", "-o", "yaml"] + s)
        XCTAssertEqual(rc, 0, err)
        let ids = try yamlToJSON(yml)["attachments"]?.array?.compactMap { $0["containerID"]?.string } ?? []
        XCTAssertEqual(Set(ids), Set(tricky + ["c1"]), yml)
        XCTAssertTrue(try yamlToJSON(yml) == (try JSON.parse(try berth(["attachments", "list", "-o", "json"] + s).1)))
    }

    // MARK: 3. what only the REST API could do

    func testInstancesShowIdentityAndNodeReleaseAndEventFilters() throws {
        let d = try Daemon(plugins: [ipam("net1", poolNet1)], tag: "cli-api")
        let s = ["--socket", d.socket]
        XCTAssertEqual(try berth(["nodes", "add", "n1", "--cpu", "2", "--memory", "1Gi"] + s).0, 0)
        let app = d.dir + "/web.json"
        try (["kind": "App", "name": "web", "spec": ["replicas": 1, "resources": ["cpu": "100m"]]] as JSON).pretty.write(toFile: app, atomically: true, encoding: .utf8)
        var (rc, out, err) = try berth(["apply", "-f", app] + s)
        XCTAssertEqual(rc, 0, err)
        (rc, out, err) = try berth(["instances", "show", "App/web/0", "-o", "json"] + s)
        XCTAssertEqual(rc, 0, err)
        let inst = try JSON.parse(out)
        XCTAssertEqual(inst["app"], "web", out)
        XCTAssertEqual(inst["name"], "web-0", out)
        (rc, out, err) = try berth(["instances", "show", "App/web/0"] + s)
        XCTAssertTrue(rc == 0 && out.contains("state:"), out + err)
        (rc, _, err) = try berth(["instances", "show", "web/0"] + s)
        XCTAssertTrue(rc != 0 && err.contains("KIND/APP/ORDINAL"), err)

        // Identity release: a non-final DEL keeps the address held for db/0; releasing the identity frees it.
        XCTAssertEqual(try berth(["attachments", "add", "--container", "db-0", "--identity", "db/0", "--release-policy", "immutable"] + s).0, 0)
        XCTAssertEqual(try berth(["attachments", "del", "--container", "db-0"] + s).0, 0)
        XCTAssertEqual(try d.request("GET", "/v1/networks/net1/capacity").1["held"], 1)
        (rc, out, err) = try berth(["identities", "release", "db/0"] + s)
        XCTAssertEqual(rc, 0, err)
        XCTAssertEqual(try d.request("GET", "/v1/networks/net1/capacity").1["held"], 0, out)

        // Node release: everything on n9 goes.
        XCTAssertEqual(try berth(["attachments", "add", "--container", "c9", "--node", "n9"] + s).0, 0)
        (rc, out, err) = try berth(["networks", "release-node", "n9", "-o", "json"] + s)
        XCTAssertEqual(rc, 0, err)
        XCTAssertEqual(try JSON.parse(out)["released"]?.array?.count, 1, out)
        XCTAssertEqual(try d.request("GET", "/v1/networks/net1/attachments").1["attachments"]?.array?.count, 0)

        // Events by type (a type or a dotted prefix) and subject (a subject or a /-prefix).
        func events(_ args: [String]) throws -> [JSON] {
            let (rc, out, err) = try berth(["events", "-o", "json"] + args + s)
            XCTAssertEqual(rc, 0, err)
            return try JSON.parse(out)["events"]?.array ?? []
        }
        let attached = try events(["--type", "network.attached"])
        XCTAssertEqual(attached.count, 2)
        XCTAssertTrue(attached.allSatisfy { $0["type"] == "network.attached" })
        let network = try events(["--type", "network"])
        XCTAssertTrue(network.count > attached.count && network.allSatisfy { $0["type"]!.string!.hasPrefix("network.") }, "\(network)")
        XCTAssertEqual(try events(["--type", "netw"]).count, 0, "a prefix counts only at a dot")
        let c9 = try events(["--subject", "net1/c9"])
        XCTAssertTrue(!c9.isEmpty && c9.allSatisfy { $0["subject"]!.string!.hasPrefix("net1/c9/") }, "\(c9)")
        let web = try events(["--subject", "App/web", "--type", "instance"])
        XCTAssertTrue(!web.isEmpty && web.allSatisfy { $0["subject"] == "App/web/0" }, "\(web)")
    }

    // MARK: 4. a remote berthd over TCP with a token

    func testRemoteServerWithATokenFromEveryPlace() throws {
        let port = 21000 + Int(getpid() % 20000)
        let token = "cli-test-token-0123456789"
        let d = try Daemon(plugins: [ipam("net1", poolNet1)], tag: "cli-tcp",
                           extra: [("api", ["listen": .string("127.0.0.1:\(port)"), "token": .string(token)])])
        let url = "http://127.0.0.1:\(port)"
        let tokenFile = d.dir + "/token"
        try "\(token)\n".write(toFile: tokenFile, atomically: true, encoding: .utf8)
        let noSocket: [String: String?] = ["BERTH_SOCKET": "/nonexistent/berthd.sock"]
        for (args, env) in [(["--server", url, "--token-file", tokenFile], noSocket),
                            (["--server", "http://localhost:\(port)", "--token-file", tokenFile], noSocket),
                            (["--server", url, "--token", token], noSocket),
                            ([], noSocket.merging(["BERTH_SERVER": url, "BERTH_TOKEN": token]) { $1 }),
                            ([], noSocket.merging(["BERTH_SERVER": url, "BERTH_TOKEN_FILE": tokenFile]) { $1 })] {
            let (rc, out, err) = try berth(["attachments", "add", "--container", "remote", "-o", "json"] + args, env: env)
            XCTAssertEqual(rc, 0, "\(args) \(env): \(err)")
            XCTAssertEqual(try JSON.parse(out)["ips"]?[0]?["address"], "10.99.0.2/24")
        }
        // Four ways, one daemon: the same idempotent attachment.
        XCTAssertEqual(try d.request("GET", "/v1/networks/net1/attachments").1["attachments"]?.array?.count, 1)

        // events --watch follows over TCP with the token, filtered.
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Paths.bin + "/berth")
        p.arguments = ["events", "--watch", "--type", "network", "-o", "json", "--server", url, "--token-file", tokenFile]
        let pipe = Pipe()
        p.standardOutput = pipe
        let seen = Shared("")
        pipe.fileHandleForReading.readabilityHandler = { h in let s = String(decoding: h.availableData, as: UTF8.self); seen.with { $0 += s } }
        try p.run()
        defer { if p.isRunning { p.terminate(); p.waitUntilExit() }; pipe.fileHandleForReading.readabilityHandler = nil }
        XCTAssertEqual(try d.request("POST", "/v1/networks/net1/attachments", ["containerID": "watched"]).0, 200)
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline && !seen.get.contains("net1/watched/eth0") { usleep(50_000) }
        let types = seen.get.split(separator: "\n").compactMap { try? JSON.parse(String($0)) }.compactMap { $0["type"]?.string }
        XCTAssertTrue(seen.get.contains("net1/watched/eth0") && !types.isEmpty && types.allSatisfy { $0.hasPrefix("network.") }, seen.get)

        var (rc, _, err) = try berth(["status", "--server", url, "--token", "wrong-token-wrong-token"])
        XCTAssertTrue(rc != 0 && err.contains("bearer token") && err.contains("401"), err)
        (rc, _, err) = try berth(["status", "--server", url])
        XCTAssertTrue(rc != 0 && err.contains("needs berthd's api.token") && err.contains("--token-file"), err)
        (rc, _, err) = try berth(["status", "--server", "ftp://x"])
        XCTAssertTrue(rc != 0 && err.contains("not an http:// or https:// URL"), err)
        (rc, _, err) = try berth(["status", "--server", url, "--socket", d.socket])
        XCTAssertTrue(rc != 0 && err.contains("not both"), err)
        (rc, _, err) = try berth(["status", "--server", "http://127.0.0.1:1", "--token", token])
        XCTAssertTrue(rc != 0 && err.contains("cannot connect") && err.contains("--server"), err)
        (rc, _, err) = try berth(["status", "--server", "https://127.0.0.1:\(port)", "--token", token, "--cacert", tokenFile])
        XCTAssertTrue(rc != 0 && err.contains("cannot be given a CA file") && err.contains("update-ca-certificates"), err)
    }

    /// https:// goes through URLSession: a server whose certificate the system does not trust is refused, saying so.
    func testHTTPSRefusesAnUntrustedCertificate() throws {
        let dir = tempDir("cli-tls")
        let (grc, _, gerr) = try runTool("/usr/bin/openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                                                           "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem"])
        XCTAssertEqual(grc, 0, gerr)
        let port = 22000 + Int(getpid() % 20000)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        server.arguments = ["s_server", "-accept", "127.0.0.1:\(port)", "-cert", dir + "/cert.pem", "-key", dir + "/key.pem", "-www", "-quiet"]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        server.standardInput = Pipe()
        try server.run()
        defer { server.terminate(); server.waitUntilExit() }
        var (rc, err) = (Int32(0), "")
        for _ in 0..<50 {
            (rc, _, err) = try berth(["status", "--server", "https://127.0.0.1:\(port)", "--token", "t-0123456789abcdef"])
            // Until openssl listens: "cannot reach berthd at …", whatever words the transport's own error has.
            if !err.contains("cannot reach") && !err.contains("Could not connect") && !err.contains("refused") { break }
            usleep(100_000)
        }
        XCTAssertNotEqual(rc, 0)
        XCTAssertTrue(err.contains("TLS with https://127.0.0.1:\(port) failed") && err.contains("system's CA store"), err)
    }

    // MARK: 5. --version, help on every option, completion

    func testVersionHelpTextAndCompletion() throws {
        let (rc, out, _) = try berth(["--version"])
        XCTAssertEqual(rc, 0)
        XCTAssertEqual(out.trimmingSpaces, BerthVersion.current)
        let (rc2, out2, _) = try runTool(Paths.bin + "/berthd", ["--version"])
        XCTAssertEqual(rc2, 0)
        XCTAssertEqual(out2.trimmingSpaces, BerthVersion.current)

        // Every option, flag and argument of every subcommand has help text.
        for tool in ["berth", "berthd"] {
            let (rc, dump, err) = try runTool(Paths.bin + "/" + tool, ["--experimental-dump-help"])
            XCTAssertEqual(rc, 0, err)
            var missing: [String] = []
            var commands = 0
            func walk(_ c: JSON, _ path: String) {
                commands += 1
                for a in c["arguments"]?.array ?? [] {
                    let names = (a["names"]?.array ?? []).compactMap { $0["name"]?.string }
                    if names.contains("help") || names.contains("version") { continue }
                    if (a["abstract"]?.string ?? "").isEmpty { missing.append("\(path) \(names.first ?? a["valueName"]?.string ?? "?")") }
                }
                // `help` is swift-argument-parser's own.
                for sub in c["subcommands"]?.array ?? [] where sub["commandName"] != "help" { walk(sub, path + " " + (sub["commandName"]?.string ?? "?")) }
            }
            walk(try XCTUnwrap(try JSON.parse(dump)["command"]), tool)
            XCTAssertTrue(missing.isEmpty, "options without help text: \(missing)")
            XCTAssertGreaterThan(commands, tool == "berth" ? 50 : 0)
        }
        for shell in ["bash", "zsh", "fish"] {
            let (rc, out, err) = try berth(["--generate-completion-script", shell])
            XCTAssertEqual(rc, 0, err)
            XCTAssertTrue(out.contains("identities") && out.contains("release-node"), "\(shell) completion lists the commands")
        }
        let doc = try String(contentsOfFile: Paths.root + "/docs/cli.md", encoding: .utf8)
        XCTAssertTrue(doc.contains("--generate-completion-script") && doc.contains("BERTH_SERVER") && doc.contains("-o yaml"))
    }

    // MARK: 6. every validation problem

    func testValidationErrorsListEveryProblem() throws {
        let d = try Daemon(plugins: [ipam("net1", poolNet1)], tag: "cli-valid")
        let f = d.dir + "/bad.json"
        try (["kind": "App", "name": "web", "spec": ["replicas": "three", "ports": "80", "bogus": 1]] as JSON).pretty.write(toFile: f, atomically: true, encoding: .utf8)
        let (rc, _, err) = try berth(["apply", "-f", f, "--socket", d.socket])
        XCTAssertNotEqual(rc, 0)
        XCTAssertFalse(err.contains("more)"), err)
        for p in ["spec.replicas", "spec.ports", "spec.bogus"] { XCTAssertTrue(err.contains(p), "\(p) missing from: \(err)") }
        let (st, body) = try d.request("PUT", "/v1/kinds/App/web", ["spec": ["replicas": "three", "ports": "80", "bogus": 1]])
        XCTAssertEqual(st, 400)
        XCTAssertEqual(body["details"]?["problems"]?.array?.count, 3, body.serialized)
        let msg = body["error"]?.string ?? ""
        XCTAssertTrue(msg.contains("spec.replicas") && msg.contains("spec.ports") && msg.contains("spec.bogus"), msg)
        XCTAssertEqual(try d.request("GET", "/v1/kinds/App").1["items"]?.array?.count, 0, "nothing was created")
    }

    // MARK: 7. ids percent-encoded on the way, decoded by berthd

    func testContainerIDsWithReservedCharactersRoundTrip() throws {
        let d = try Daemon(plugins: [ipam("net1", poolNet1)], tag: "cli-encode")
        let s = ["--socket", d.socket]
        for cid in ["a?b#c", "x/y", "p%2Fq", "sp ace&k=v"] {
            var (rc, out, err) = try berth(["attachments", "add", "--container", cid] + s)
            XCTAssertEqual(rc, 0, "\(cid): \(err)")
            (rc, out, err) = try berth(["attachments", "check", "--container", cid, "-o", "json"] + s)
            XCTAssertEqual(rc, 0, "\(cid): check: \(err)")
            XCTAssertEqual(try JSON.parse(out)["ips"]?.array?.count, 1, "\(cid): \(out)")
            (rc, out, err) = try berth(["attachments", "del", "--container", cid] + s)
            XCTAssertEqual(rc, 0, "\(cid): del: \(err)")
            let left = try d.request("GET", "/v1/networks/net1/attachments").1["attachments"]?.array ?? []
            XCTAssertEqual(left.count, 0, "\(cid): del released nothing: \(left)")
            let detached = try d.request("GET", "/v1/events?since=0").1["events"]!.array!.filter { $0["type"] == "network.detached" }
            XCTAssertEqual(detached.last?["subject"]?.string, "net1/\(cid)/eth0", "berthd decoded the id back")
            // A query value comes back whole too.
            (rc, out, err) = try berth(["events", "--subject", "net1/\(cid)", "-o", "json"] + s)
            XCTAssertEqual(rc, 0, err)
            let subjects = Set((try JSON.parse(out)["events"]?.array ?? []).compactMap { $0["subject"]?.string })
            XCTAssertEqual(subjects, ["net1/\(cid)/eth0"], "\(cid): \(out)")
        }
    }
}
