// The etcd engine over TLS (https:// endpoints, store.tls): a real etcd serving TLS with client-certificate
// authentication, certificates made by openssl for the test. The right CA and client certificate work (store and
// `berthd --check`); no client certificate, or a CA that did not sign the server's, fail with errors that say so.
import BerthStore
import BerthWire
import Foundation
import XCTest

final class EtcdTLSTests: XCTestCase {
    var dir = ""
    var etcd: Process?
    var port = 0
    var endpoint: String { "https://127.0.0.1:\(port)" }

    /// A CA, a server certificate for 127.0.0.1 and a client certificate (plus a second CA that signed neither).
    func makeCertificates() throws {
        func ssl(_ args: [String]) throws {
            let (rc, _, err) = try runTool("/usr/bin/openssl", args)
            XCTAssertEqual(rc, 0, "openssl \(args.joined(separator: " ")): \(err)")
        }
        try "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n".write(toFile: dir + "/ext", atomically: true, encoding: .utf8)
        for ca in ["ca", "other-ca"] {
            try ssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/\(ca).key", "-out", "\(dir)/\(ca).crt", "-days", "1", "-subj", "/CN=berth-test-\(ca)"])
        }
        for who in ["server", "client"] {
            try ssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(dir)/\(who).key", "-out", "\(dir)/\(who).csr", "-subj", "/CN=berth-\(who)"])
            try ssl(["x509", "-req", "-in", "\(dir)/\(who).csr", "-CA", "\(dir)/ca.crt", "-CAkey", "\(dir)/ca.key", "-CAcreateserial",
                     "-out", "\(dir)/\(who).crt", "-days", "1", "-extfile", "\(dir)/ext"])
        }
    }

    override func setUpWithError() throws {
        dir = tempDir("etcd-tls")
        try makeCertificates()
        port = freeLoopbackPort()
        let peer = "http://127.0.0.1:\(freeLoopbackPort())"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/etcd")
        p.arguments = ["--name", "tls", "--data-dir", dir + "/data", "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
                       "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "tls=\(peer)",
                       "--cert-file", dir + "/server.crt", "--key-file", dir + "/server.key", "--client-cert-auth", "--trusted-ca-file", dir + "/ca.crt",
                       "--log-outputs", dir + "/etcd.log", "--logger", "zap"]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        etcd = p
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if (try? EtcdStore(settings())) != nil { return }
            usleep(100_000)
        }
        XCTFail("etcd with TLS did not answer within 20 s: \((try? String(contentsOfFile: dir + "/etcd.log", encoding: .utf8))?.suffix(1500) ?? "")")
    }

    override func tearDown() {
        if let etcd, etcd.isRunning { kill(etcd.processIdentifier, SIGKILL); etcd.waitUntilExit() }
        super.tearDown()
    }

    func settings(ca: String = "ca", client: Bool = true) -> EtcdSettings {
        EtcdSettings(endpoints: [endpoint], site: "tls-\(getpid())",
                     tls: EtcdTLSFiles(ca: "\(dir)/\(ca).crt", certificate: client ? dir + "/client.crt" : nil, key: client ? dir + "/client.key" : nil))
    }

    func testTheRightCAAndClientCertificateWork() throws {
        let store = try EtcdStore(settings())
        try store.begin()
        try StoreContract.put(store, "ns", Array("k".utf8), Array("over TLS".utf8))
        try store.commit()
        let again = try EtcdStore(settings())
        XCTAssertEqual(try StoreContract.get(again, "ns", Array("k".utf8)), Array("over TLS".utf8))

        // The watch runs over TLS too: another store's event wakes it; stop() ends its blocked TLS read at once.
        try assertAWatchWakes(settings(), onEventFrom: again)
        try store.removeSite()

        // berthd --check connects with the site's store.tls files.
        let site = dir + "/site.json"
        try #"{"stateDir": "\#(dir)/state", "api": {"link": ""}, "store": {"engine": "etcd", "endpoints": ["\#(endpoint)"], "tls": {"ca": "\#(dir)/ca.crt", "certificate": "\#(dir)/client.crt", "key": "\#(dir)/client.key"}}}"#
            .write(toFile: site, atomically: true, encoding: .utf8)
        let (rc, _, err) = try runTool(Paths.bin + "/berthd", ["--site", site, "--check"])
        XCTAssertEqual(rc, 0, err)
        XCTAssertTrue(err.contains("store: etcd \(endpoint) answers, version 3."), err)
    }

    func testNoClientCertificateOrAnotherCAFailClearly() throws {
        XCTAssertThrowsError(try EtcdStore(settings(client: false)), "the member requires a client certificate") {
            XCTAssertEqual(($0 as? BerthError)?.status, .unavailable, "\($0)")
            XCTAssertTrue("\($0)".contains("TLS"), "\($0)")
        }
        XCTAssertThrowsError(try EtcdStore(settings(ca: "other-ca")), "the server's certificate is not signed by that CA") {
            XCTAssertEqual(($0 as? BerthError)?.status, .unavailable, "\($0)")
            XCTAssertTrue("\($0)".contains("TLS") && "\($0)".lowercased().contains("certificate"), "\($0)")
        }
        XCTAssertThrowsError(try EtcdStore(EtcdSettings(endpoints: [endpoint], site: "x", tls: EtcdTLSFiles(ca: dir + "/missing.crt")))) {
            XCTAssertEqual(($0 as? BerthError)?.status, .invalidArgument, "\($0)")
            XCTAssertTrue("\($0)".contains("missing.crt"), "\($0)")
        }
    }
}
