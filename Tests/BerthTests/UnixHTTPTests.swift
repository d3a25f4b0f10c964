// The small HTTP client of BerthWire (UnixHTTP.swift) against canned responses from a unix-socket server in the test:
// what real servers send that the client must read to the end before the next response on a kept-alive connection.
import BerthWire
import Foundation
import XCTest

final class UnixHTTPTests: XCTestCase {
    /// Serves `responses` in order on one accepted connection, one per request (read up to the blank line).
    func serve(_ path: String, _ responses: [String]) throws -> Thread {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in path.utf8.enumerated() { p[i] = b } }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        XCTAssertEqual(rc, 0)
        XCTAssertEqual(listen(fd, 1), 0)
        let t = Thread {
            let c = accept(fd, nil, nil)
            for r in responses {
                var seen: [UInt8] = [], byte: UInt8 = 0
                while !seen.suffix(4).elementsEqual([13, 10, 13, 10]), read(c, &byte, 1) == 1 { seen.append(byte) }
                _ = Array(r.utf8).withUnsafeBytes { write(c, $0.baseAddress!, $0.count) }
            }
            close(c)
            close(fd)
        }
        t.start()
        return t
    }

    /// A chunked response with trailers (etcd's JSON gateway sends `Grpc-Trailer-Content-Type` after an error body):
    /// the trailers are read with the response, and the next response on the connection is read whole.
    func testChunkedTrailersAreConsumed() throws {
        let path = tempDir("http") + "/s"
        _ = try serve(path, [
            "HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\nTrailer: Grpc-Trailer-Content-Type\r\n\r\n"
                + "5\r\nhello\r\n0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ])
        let conn = UnixHTTPConnection(path: path, timeoutSeconds: 5)
        let first = try conn.request("POST", "/a", body: [])
        XCTAssertEqual(first.status, 429)
        XCTAssertEqual(first.text, "hello")
        let second = try conn.request("POST", "/b", body: [])
        XCTAssertEqual(second.status, 200)
        XCTAssertEqual(second.text, "ok")
    }

    /// A body several times the client's 64 KiB receive area, then another response on the same connection: every
    /// byte arrives in order across the reads, and nothing of the first is left for the second.
    func testABodyLargerThanOneReadArrivesWhole() throws {
        let path = tempDir("http-large") + "/s"
        var rng = SystemRandomNumberGenerator()
        let body = String((0..<300_000).map { _ in "abcdefghijklmnopqrstuvwxyz0123456789".randomElement(using: &rng)! })
        _ = try serve(path, ["HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\r\n" + body,
                             "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
        let conn = UnixHTTPConnection(path: path, timeoutSeconds: 5)
        let first = try conn.request("GET", "/large")
        XCTAssertEqual(first.status, 200)
        XCTAssertEqual(first.body.count, 300_000)
        XCTAssertTrue(first.text == body, "the body came back changed")
        XCTAssertEqual(try conn.request("GET", "/b").text, "ok")
    }
}
