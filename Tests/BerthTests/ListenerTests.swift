// The API's listeners against real clients: TLS on the TCP listener (a certificate made here with openssl, curl as
// the client, mutual TLS with a client CA), no clear-text listener off loopback, the bearer scheme in any case; a
// flood of idle TCP connections that leaves the unix socket answering, slowloris headers cut at the header timeout,
// and the unix socket never reachable with the umask's mode.
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import BerthWire
import Foundation
import XCTest

#if canImport(Glibc)
import Glibc
#endif

final class ListenerTests: XCTestCase {
    let token = "listener-token-0123456789"
    var hello: JSON { [["name": "hello", "path": .string(Paths.plugin("hello"))]] }

    /// A TCP connection to 127.0.0.1:port (blocking, receive timeout `timeout` seconds), or -1.
    func connectTCP(_ port: Int, timeout: Int = 5) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var tv = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if rc != 0 { close(fd); return -1 }
        return fd
    }

    /// The TCP listener starts beside the unix socket (which Daemon waits for): wait until it accepts.
    func waitForTCP(_ port: Int) {
        let until = Date().addingTimeInterval(10)
        while Date() < until {
            let fd = connectTCP(port)
            if fd >= 0 { close(fd); return }
            usleep(20_000)
        }
        XCTFail("nothing listens on 127.0.0.1:\(port)")
    }

    func openssl(_ args: [String]) throws {
        let (rc, _, err) = try runTool("/usr/bin/env", ["openssl"] + args)
        XCTAssertEqual(rc, 0, "openssl \(args.joined(separator: " ")): \(err)")
    }

    /// A self-signed server certificate for 127.0.0.1/localhost in `dir` (cert.pem, key.pem).
    func makeServerCertificate(_ dir: String) throws {
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                     "-keyout", dir + "/key.pem", "-out", dir + "/cert.pem", "-subj", "/CN=localhost",
                     "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
    }

    /// curl: (exit status, HTTP status or 0, body).
    func curl(_ args: [String]) throws -> (Int32, Int, String) {
        let (rc, out, err) = try runTool("/usr/bin/env", ["curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}"] + args)
        let lines = out.split(separator: "\n", omittingEmptySubsequences: false)
        let code = Int(lines.last ?? "") ?? 0
        return (rc, code, lines.dropLast().joined(separator: "\n") + err)
    }

    // MARK: TLS

    func testTLSListenerWithCurl() throws {
        let dir = tempDir("tls-certs")
        try makeServerCertificate(dir)
        let port = freeLoopbackPort()
        // Not loopback: allowed because it is TLS.
        let d = try Daemon(plugins: hello, tag: "tls",
                           extra: [("api", ["listen": .string("0.0.0.0:\(port)"), "token": .string(token),
                                            "tls": ["certificate": .string(dir + "/cert.pem"), "key": .string(dir + "/key.pem")]])])
        waitForTCP(port)
        let url = "https://127.0.0.1:\(port)/v1/plugins"
        // The scheme in any case (RFC 9110), with the token: 200 over a verified TLS connection.
        for scheme in ["Bearer", "bearer", "BEARER"] {
            let (rc, code, body) = try curl(["--cacert", dir + "/cert.pem", "-H", "Authorization: \(scheme) \(token)", url])
            XCTAssertEqual(rc, 0, body)
            XCTAssertEqual(code, 200, body)
            XCTAssertTrue(body.contains("\"hello\""), body)
        }
        // Wrong token, no token: 401.
        var (rc, code, body) = try curl(["--cacert", dir + "/cert.pem", "-H", "Authorization: Bearer wrong-token-wrong-token", url])
        XCTAssertEqual(code, 401, body)
        (rc, code, body) = try curl(["--cacert", dir + "/cert.pem", url])
        XCTAssertEqual(code, 401, body)
        // A client that does not trust the certificate refuses the connection; plain HTTP to the TLS port gets no answer.
        (rc, code, body) = try curl(["-H", "Authorization: Bearer \(token)", url])
        XCTAssertNotEqual(rc, 0, "an unverified certificate was accepted: \(body)")
        (rc, code, body) = try curl(["-H", "Authorization: Bearer \(token)", "http://127.0.0.1:\(port)/v1/plugins"])
        XCTAssertNotEqual(rc, 0, "plain HTTP was answered on the TLS port: \(body)")
        XCTAssertEqual(code, 0, body)
        XCTAssertEqual(try d.request("GET", "/healthz").0, 200, "the unix socket needs no token")
    }

    func testMutualTLSWithClientCA() throws {
        let dir = tempDir("mtls-certs")
        try makeServerCertificate(dir)
        try openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                     "-keyout", dir + "/ca.key", "-out", dir + "/ca.pem", "-subj", "/CN=berth-test-ca"])
        try openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                     "-keyout", dir + "/client.key", "-out", dir + "/client.csr", "-subj", "/CN=client"])
        try openssl(["x509", "-req", "-in", dir + "/client.csr", "-CA", dir + "/ca.pem", "-CAkey", dir + "/ca.key",
                     "-CAcreateserial", "-out", dir + "/client.pem", "-days", "1"])
        let port = freeLoopbackPort()
        let d = try Daemon(plugins: hello, tag: "mtls",
                       extra: [("api", ["listen": .string("127.0.0.1:\(port)"), "token": .string(token),
                                        "tls": ["certificate": .string(dir + "/cert.pem"), "key": .string(dir + "/key.pem"),
                                                "clientCA": .string(dir + "/ca.pem")]])])
        waitForTCP(port)
        let url = "https://127.0.0.1:\(port)/healthz"
        let auth = ["-H", "Authorization: Bearer \(token)"]
        var (rc, code, body) = try curl(["--cacert", dir + "/cert.pem"] + auth + [url])
        XCTAssertNotEqual(rc, 0, "no client certificate, yet answered: \(body)")
        XCTAssertEqual(code, 0, body)
        (rc, code, body) = try curl(["--cacert", dir + "/cert.pem", "--cert", dir + "/client.pem", "--key", dir + "/client.key"] + auth + [url])
        XCTAssertEqual(rc, 0, body)
        XCTAssertEqual(code, 200, body)
        withExtendedLifetime(d) {}
    }

    /// A listener off loopback without TLS would send the token in clear text: refused by --check and at start, with
    /// the key named and what to do; so are unreadable or mismatched TLS files.
    func testClearTextListenerOffLoopbackIsRefused() throws {
        let dir = tempDir("tls-refused")
        try makeServerCertificate(dir)
        func check(_ api: JSON, start: Bool = false) throws -> (Int32, String) {
            let d = try Daemon(plugins: hello, tag: "tls-refused", extra: [("api", api)], start: false)
            // Started for real, a berthd that accepts the site would serve: `timeout` ends it (exit 124).
            let args = ["10", Paths.bin + "/berthd", "--site", d.siteFile] + (start ? [] : ["--check"])
            let (rc, out, err) = try runTool("/usr/bin/timeout", args)
            return (rc, out + err)
        }
        var (rc, out) = try check(["listen": "0.0.0.0:7431", "token": .string(token)])
        XCTAssertEqual(rc, 2, out)
        XCTAssertTrue(out.contains("api.listen: 0.0.0.0:7431 is not a loopback address") && out.contains("set api.tls"), out)
        (rc, out) = try check(["listen": "0.0.0.0:7431", "token": .string(token)], start: true)
        XCTAssertEqual(rc, 2, "berthd started: \(out)")
        XCTAssertTrue(out.contains("not a loopback address"), out)
        (rc, out) = try check(["listen": "127.0.0.1:7431", "token": .string(token)])
        XCTAssertEqual(rc, 0, "loopback without TLS is fine: \(out)")
        (rc, out) = try check(["listen": "0.0.0.0:7431", "token": .string(token),
                               "tls": ["certificate": .string(dir + "/missing.pem"), "key": .string(dir + "/key.pem")]])
        XCTAssertEqual(rc, 2, out)
        XCTAssertTrue(out.contains("api.tls.certificate: cannot read \(dir)/missing.pem"), out)
        // A key that is not the certificate's.
        try openssl(["genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-out", dir + "/other.key"])
        (rc, out) = try check(["listen": "0.0.0.0:7431", "token": .string(token),
                               "tls": ["certificate": .string(dir + "/cert.pem"), "key": .string(dir + "/other.key")]])
        XCTAssertEqual(rc, 2, out)
        XCTAssertTrue(out.contains("api.tls"), out)
        (rc, out) = try check(["listen": "0.0.0.0:7431", "token": .string(token),
                               "tls": ["certificate": .string(dir + "/cert.pem"), "key": .string(dir + "/key.pem")]])
        XCTAssertEqual(rc, 0, out)
    }

    // MARK: connection floods and slow clients

    /// 520 idle TCP connections against a berthd limited to 256 open files: the TCP cap keeps descriptors for the
    /// unix socket, which answers within a second; once the flood ends, TCP answers again.
    func testIdleConnectionFloodLeavesTheUnixSocketServed() throws {
        var rl = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
        if rl.rlim_cur < 2048 && rl.rlim_max > rl.rlim_cur {
            rl.rlim_cur = min(rl.rlim_max, 4096)
            setrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl)
        }
        let port = freeLoopbackPort()
        let d = try Daemon(plugins: hello, tag: "flood",
                           extra: [("api", ["listen": .string("127.0.0.1:\(port)"), "token": .string(token)])],
                           start: false)
        d.launcher = ["/usr/bin/prlimit", "--nofile=256:256", "--"]
        try d.start()
        waitForTCP(port)
        var flood: [Int32] = []
        defer { for fd in flood { close(fd) } }
        for _ in 0..<520 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            XCTAssertGreaterThanOrEqual(fd, 0, "the test itself ran out of descriptors")
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            flood.append(fd)
        }
        usleep(1_500_000)  // let berthd accept what it will (SYNs dropped from a full backlog are retried after 1 s)
        let t0 = Date()
        let r = try UnixHTTPConnection(path: d.socket, timeoutSeconds: 5).request("GET", "/healthz")
        let elapsed = Date().timeIntervalSince(t0)
        XCTAssertEqual(r.status, 200)
        XCTAssertLessThan(elapsed, 1.0, "the unix socket took \(elapsed) s to answer during the flood")
        XCTAssertTrue(d.log().contains("api.maxConnections 256 lowered to 64"), d.log())
        for fd in flood { close(fd) }
        flood = []
        // The flood gone, TCP serves again.
        var answered = false
        let until = Date().addingTimeInterval(10)
        while !answered && Date() < until {
            let fd = connectTCP(port)
            if fd >= 0 {
                let req = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \(token)\r\n\r\n"
                _ = req.withCString { send(fd, $0, strlen($0), 0) }
                var buf = [UInt8](repeating: 0, count: 512)
                let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 512, 0) }
                answered = n > 0 && String(decoding: buf[0..<n], as: UTF8.self).hasPrefix("HTTP/1.1 200")
                close(fd)
            }
            if !answered { usleep(200_000) }
        }
        XCTAssertTrue(answered, "TCP did not answer after the flood ended")
    }

    /// A client that sends its header one byte at a time, never finishing, is cut at api.headerTimeoutMs; one that
    /// sends nothing at all too; a complete request on a fresh connection is still served.
    func testSlowHeadersAreCutAtTheHeaderTimeout() throws {
        let port = freeLoopbackPort()
        let d = try Daemon(plugins: hello, tag: "slowloris",
                       extra: [("api", ["listen": .string("127.0.0.1:\(port)"), "token": .string(token), "headerTimeoutMs": 1000])])
        waitForTCP(port)
        let silent = connectTCP(port, timeout: 1)
        let slow = connectTCP(port, timeout: 1)
        XCTAssertGreaterThanOrEqual(silent, 0)
        XCTAssertGreaterThanOrEqual(slow, 0)
        defer { close(silent); close(slow) }
        let partial = Array("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".utf8)
        let t0 = Date()
        var closedAfter: Double? = nil
        var sent = 0
        while Date().timeIntervalSince(t0) < 6 {
            // One more header byte every 100 ms, never the blank line.
            let byte = sent < partial.count ? partial[sent] : UInt8(ascii: "a")
            if send(slow, [byte], 1, Int32(MSG_NOSIGNAL)) < 0 { closedAfter = Date().timeIntervalSince(t0); break }
            sent += 1
            var b: UInt8 = 0
            let n = recv(slow, &b, 1, Int32(MSG_DONTWAIT))
            if n == 0 { closedAfter = Date().timeIntervalSince(t0); break }
            usleep(100_000)
        }
        XCTAssertNotNil(closedAfter, "a header still unfinished after 6 s was not cut (api.headerTimeoutMs 1000)")
        if let c = closedAfter { XCTAssertGreaterThan(c, 0.8, "cut before the header timeout") }
        var b: UInt8 = 0
        XCTAssertEqual(recv(silent, &b, 1, 0), 0, "a connection that sent nothing is closed too")
        // A normal request still works.
        let fd = connectTCP(port)
        defer { close(fd) }
        let req = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \(token)\r\n\r\n"
        _ = req.withCString { send(fd, $0, strlen($0), 0) }
        var buf = [UInt8](repeating: 0, count: 512)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, 512, 0) }
        XCTAssertTrue(n > 0 && String(decoding: buf[0..<n], as: UTF8.self).hasPrefix("HTTP/1.1 200"))
        withExtendedLifetime(d) {}
    }

    // MARK: the unix socket's mode

    /// Under umask 000, the socket must never be reachable under its name with the umask's mode (0777) before a
    /// chmod: it appears with mode 0660 and its attributes never change afterwards (inotify sees every change).
    func testUnixSocketNeverHasTheUmasksMode() throws {
        let d = try Daemon(plugins: hello, tag: "umask", start: false)
        let ifd = inotify_init1(Int32(IN_NONBLOCK))
        XCTAssertGreaterThanOrEqual(ifd, 0)
        defer { close(ifd) }
        let IN_ATTRIB: UInt32 = 0x4, IN_MOVED_TO: UInt32 = 0x80, IN_CREATE: UInt32 = 0x100
        XCTAssertGreaterThanOrEqual(inotify_add_watch(ifd, d.dir, IN_ATTRIB | IN_MOVED_TO | IN_CREATE), 0)
        let old = umask(0)
        defer { umask(old) }
        try d.start()
        umask(old)
        var events: [(UInt32, String)] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(ifd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            var off = 0
            while off + 16 <= n {
                let mask = buf.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: off + 4, as: UInt32.self) }
                let len = Int(buf.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: off + 12, as: UInt32.self) })
                let name = String(decoding: buf[(off + 16)..<(off + 16 + len)].prefix { $0 != 0 }, as: UTF8.self)
                events.append((mask, name))
                off += 16 + len
            }
        }
        let onSocket = events.filter { $0.1 == "berthd.sock" }
        XCTAssertFalse(onSocket.isEmpty, "no inotify event for the socket: \(events)")
        XCTAssertFalse(onSocket.contains { $0.0 & IN_ATTRIB != 0 },
                       "the socket's mode was changed after it appeared under its name (it was reachable with the umask's mode first): \(onSocket)")
        var st = stat()
        XCTAssertEqual(lstat(d.socket, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o660)
        XCTAssertEqual(try d.request("GET", "/healthz").0, 200)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: d.dir).filter { $0.hasPrefix(".s") }
        XCTAssertEqual(leftovers, [], "the private bind directory is left behind")
    }
}
