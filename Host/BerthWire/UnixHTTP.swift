// A minimal HTTP/1.1 client over a unix-domain socket or plain TCP (keep-alive, Content-Length and chunked
// bodies). Used by the berth CLI and by berth-cni, which a container runtime execs for every call: it must start
// fast, so this uses nothing but the C library.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct WireError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable { case unreachable, io, protocolError }
    public let kind: Kind
    public let message: String
    public init(_ kind: Kind, _ message: String) { self.kind = kind; self.message = message }
    public var description: String { message }
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]
    public init(status: Int, headers: [(String, String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }
    public var text: String { String(decoding: body, as: UTF8.self) }
    public func json() throws -> JSON { try JSON.parse(body) }
}

/// Where berthd listens: its unix socket, or its TCP listener (plain HTTP; TLS is the CLI's URLSession client).
public enum HTTPEndpoint: Sendable, Equatable {
    case unix(String)
    /// A numeric IPv4 or IPv6 address and a port.
    case tcp(host: String, port: Int)

    /// "unix:PATH" or "HOST:PORT", for messages.
    public var description: String {
        switch self {
        case .unix(let p): return p
        case .tcp(let h, let p): return h.contains(":") ? "[\(h)]:\(p)" : "\(h):\(p)"
        }
    }
}

/// A connected byte stream that is not a plain socket (etcd's TLS connections, BerthStore/Etcd/EtcdTLS.swift):
/// `read` blocks for at most `timeoutSeconds` and answers [] at the end of the stream.
public protocol ByteStream: AnyObject {
    func write(_ bytes: [UInt8]) throws
    func read(timeoutSeconds: Int) throws -> [UInt8]
    func close()
}

public final class UnixHTTPConnection {
    public let endpoint: HTTPEndpoint
    /// Makes the connection's stream when it is not a plain socket (TLS); nil: a socket to `endpoint`.
    private let streamFactory: (() throws -> ByteStream)?
    private var stream: ByteStream?
    /// The socket path (empty for a TCP endpoint).
    public var path: String { if case .unix(let p) = endpoint { return p }; return "" }
    private var fd: Int32 = -1
    private var buffer: [UInt8] = []
    private var bufferStart = 0
    /// Where a socket read lands (allocated once per connection).
    private static let scratchSize = 65536
    private let scratch = UnsafeMutableRawPointer.allocate(byteCount: UnixHTTPConnection.scratchSize, alignment: 16)
    /// Seconds to wait for a response before giving up (0 = forever).
    public var timeoutSeconds: Int

    public init(path: String, timeoutSeconds: Int = 30) {
        self.endpoint = .unix(path)
        self.timeoutSeconds = timeoutSeconds
        streamFactory = nil
    }

    public init(endpoint: HTTPEndpoint, timeoutSeconds: Int = 30) {
        self.endpoint = endpoint
        self.timeoutSeconds = timeoutSeconds
        streamFactory = nil
    }

    /// A connection over streams that `factory` makes (one per connection); `endpoint` names the peer in messages.
    public init(endpoint: HTTPEndpoint, timeoutSeconds: Int = 30, streams factory: @escaping () throws -> ByteStream) {
        self.endpoint = endpoint
        self.timeoutSeconds = timeoutSeconds
        streamFactory = factory
    }

    private var connected: Bool { fd >= 0 || stream != nil }

    deinit {
        close()
        scratch.deallocate()
    }

    public func close() {
        if fd >= 0 { _ = Glibc.close(fd); fd = -1 }
        stream?.close()
        stream = nil
        buffer = []
        bufferStart = 0
    }

    private func connect() throws {
        if let streamFactory {
            stream = try streamFactory()
            return
        }
        let s: Int32
        switch endpoint {
        case .unix(let path): s = try connectUnix(path)
        case .tcp(let host, let port): s = try connectTCP(host, port)
        }
        if timeoutSeconds > 0 {
            var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
            setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }
        fd = s
    }

    /// Connects to a numeric IPv4 or IPv6 address. Names are resolved by the caller: getaddrinfo would pull the
    /// resolver's shared libraries into berth-cni, which is linked statically and never talks TCP.
    private func connectTCP(_ host: String, _ port: Int) throws -> Int32 {
        var v4 = sockaddr_in(), v6 = sockaddr_in6()
        let family: Int32
        if inet_pton(AF_INET, host, &v4.sin_addr) == 1 {
            family = AF_INET
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        } else if inet_pton(AF_INET6, host, &v6.sin6_addr) == 1 {
            family = AF_INET6
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = in_port_t(UInt16(truncatingIfNeeded: port).bigEndian)
        } else {
            throw WireError(.unreachable, "\(host) is not a numeric IPv4 or IPv6 address")
        }
        let s = socket(family, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { throw WireError(.unreachable, "socket(): \(String(cString: strerror(errno)))") }
        let rc = family == AF_INET
            ? withUnsafePointer(to: &v4) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            : withUnsafePointer(to: &v6) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(s, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        if rc != 0 {
            let e = errno
            _ = Glibc.close(s)
            throw WireError(.unreachable, "cannot connect to \(endpoint.description): \(String(cString: strerror(e)))")
        }
        var one: Int32 = 1
        setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        return s
    }

    private func connectUnix(_ path: String) throws -> Int32 {
        let s = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { throw WireError(.unreachable, "socket(): \(String(cString: strerror(errno)))") }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else {
            _ = Glibc.close(s)
            throw WireError(.unreachable, "socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
            p[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(s, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc != 0 {
            let e = errno
            _ = Glibc.close(s)
            throw WireError(.unreachable, "cannot connect to berthd at \(path): \(String(cString: strerror(e)))")
        }
        return s
    }

    /// Who errors name: berthd on its unix socket, else the TCP peer (etcd's connections are sockets too).
    private var peer: String { if case .tcp = endpoint { return endpoint.description }; return "berthd" }

    /// The Host header: the TCP peer as named, "berthd" on the unix socket.
    private var hostHeader: String { if case .tcp = endpoint { return endpoint.description }; return "berthd" }

    /// Sends one request and reads the whole response. Reconnects once if a kept-alive connection was closed.
    public func request(_ method: String, _ target: String, body: [UInt8]? = nil, headers: [(String, String)] = []) throws -> HTTPResponse {
        var head = "\(method) \(target) HTTP/1.1\r\nHost: \(hostHeader)\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body {
            head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n"
        } else if method == "POST" || method == "PUT" {
            head += "Content-Length: 0\r\n"
        }
        head += "\r\n"
        var msg = Array(head.utf8)
        if let body { msg += body }
        let reused = connected
        if !reused { try connect() }
        do {
            try writeAll(msg)
            return try readResponse()
        } catch let e as WireError where reused && e.kind == .io {
            close()
            try connect()
            try writeAll(msg)
            return try readResponse()
        }
    }

    private func writeAll(_ data: [UInt8]) throws {
        if let stream {
            try stream.write(data)
            return
        }
        var off = 0
        while off < data.count {
            let n = data.withUnsafeBytes { send(fd, $0.baseAddress! + off, data.count - off, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw WireError(.io, "write to \(peer) failed: \(String(cString: strerror(errno)))")
            }
            off += n
        }
    }

    private func fill() throws {
        if bufferStart > 0 && bufferStart == buffer.count { buffer.removeAll(keepingCapacity: true); bufferStart = 0 }
        if let stream {
            let bytes = try stream.read(timeoutSeconds: timeoutSeconds)
            if bytes.isEmpty { throw WireError(.io, "\(endpoint.description) closed the connection") }
            buffer.append(contentsOf: bytes)
            return
        }
        while true {
            // Into the connection's one receive area (not a zeroed 64 KiB array made for each read), then only the
            // bytes received are copied.
            let n = recv(fd, scratch, Self.scratchSize, 0)
            if n > 0 { buffer.append(contentsOf: UnsafeRawBufferPointer(start: scratch, count: n)); return }
            if n == 0 { throw WireError(.io, "\(peer) closed the connection") }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK { throw WireError(.io, "timed out waiting for \(peer) after \(timeoutSeconds)s") }
            throw WireError(.io, "read from \(peer) failed: \(String(cString: strerror(errno)))")
        }
    }

    private func readLine() throws -> String {
        while true {
            if let nl = buffer[bufferStart...].firstIndex(of: 0x0A) {
                var end = nl
                if end > bufferStart, buffer[end - 1] == 0x0D { end -= 1 }
                let line = String(decoding: buffer[bufferStart..<end], as: UTF8.self)
                bufferStart = nl + 1
                return line
            }
            try fill()
        }
    }

    private func readBytes(_ n: Int) throws -> [UInt8] {
        while buffer.count - bufferStart < n { try fill() }
        let out = Array(buffer[bufferStart..<(bufferStart + n)])
        bufferStart += n
        return out
    }

    private func readResponse() throws -> HTTPResponse {
        let statusLine = try readLine()
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, let status = Int(parts[1]) else {
            throw WireError(.protocolError, "bad status line from berthd: \(statusLine)")
        }
        var headers: [(String, String)] = []
        var length: Int? = nil
        var chunked = false
        var closeAfter = false
        while true {
            let line = try readLine()
            if line.isEmpty { break }
            guard let colon = line.firstIndex(of: ":") else { continue }
            let k = String(line[..<colon]).lowercased()
            let v = String(line[line.index(after: colon)...]).trimmingSpaces
            headers.append((k, v))
            if k == "content-length" { length = Int(v) }
            if k == "transfer-encoding", v.lowercased().contains("chunked") { chunked = true }
            if k == "connection", v.lowercased() == "close" { closeAfter = true }
        }
        var body: [UInt8] = []
        if chunked {
            while true {
                let sizeLine = try readLine()
                let hex = sizeLine.split(separator: ";").first.map(String.init)?.trimmingSpaces ?? ""
                guard let size = Int(hex, radix: 16) else { throw WireError(.protocolError, "bad chunk size \(sizeLine)") }
                if size == 0 { while try !readLine().isEmpty {}; break }  // trailers (etcd's gateway sends some), then the blank line
                body += try readBytes(size)
                _ = try readLine()
            }
        } else if let length {
            body = try readBytes(length)
        } else {
            // read to close
            while true {
                do { try fill() } catch { break }
            }
            body = Array(buffer[bufferStart...])
            bufferStart = buffer.count
            closeAfter = true
        }
        if closeAfter { close() }
        return HTTPResponse(status: status, headers: headers, body: body)
    }

    /// Streams a chunked response, calling `onChunk` for each chunk until it returns false or the stream ends.
    public func stream(_ target: String, headers: [(String, String)] = [], onChunk: ([UInt8]) -> Bool) throws {
        try stream("GET", target, body: nil, headers: headers, onChunk: onChunk)
    }

    /// Connects now unless connected (a caller that must be able to interrupt a blocking read takes `descriptor`).
    public func open() throws { if !connected { try connect() } }

    /// The socket (-1 when not connected, or a stream that is not a socket). Another thread may `shutdown(2)` it to
    /// end a blocked read; only the owner closes it.
    public var descriptor: Int32 { fd }

    /// Ends a read blocked in another thread (the socket shut down, or the stream closed); the owner still closes.
    public func interrupt() {
        if fd >= 0 { _ = shutdown(fd, Int32(SHUT_RDWR)) } else { stream?.close() }
    }

    /// Writes `bytes` as they are, connecting first (a protocol other than HTTP/1.1 on the same connection: the etcd
    /// engine's gRPC speaks HTTP/2 over it, BerthStore/Etcd/GRPC.swift).
    public func writeRaw(_ bytes: [UInt8]) throws {
        if !connected { try connect() }
        try writeAll(bytes)
    }

    /// The bytes received and not yet consumed, else the next bytes to arrive (waiting at most `timeoutSeconds`, then
    /// a "timed out" error); an error when the peer closed the connection.
    public func readRaw() throws -> [UInt8] {
        if bufferStart == buffer.count { try fill() }
        let out = Array(buffer[bufferStart...])
        buffer.removeAll(keepingCapacity: true)
        bufferStart = 0
        return out
    }

    /// Streams the chunked response to `method` with `body` (etcd's watch: a POST), as `stream(_:headers:onChunk:)`.
    public func stream(_ method: String, _ target: String, body: [UInt8]?, headers: [(String, String)] = [], onChunk: ([UInt8]) -> Bool) throws {
        if !connected { try connect() }
        var head = "\(method) \(target) HTTP/1.1\r\nHost: \(hostHeader)\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.count)\r\n" }
        try writeAll(Array((head + "\r\n").utf8) + (body ?? []))
        let statusLine = try readLine()
        var chunked = false
        var length = 0
        while true {
            let line = try readLine()
            if line.isEmpty { break }
            if line.lowercased().hasPrefix("transfer-encoding:"), line.lowercased().contains("chunked") { chunked = true }
            if line.lowercased().hasPrefix("content-length:") { length = Int(String(line.dropFirst(15)).trimmingSpaces) ?? 0 }
        }
        guard statusLine.contains(" 200") else {
            // The answer's text says why (etcd: its error as JSON), its first chunk or up to 4 KiB of it.
            var text: [UInt8] = []
            if chunked, let size = Int(try readLine().split(separator: ";").first.map(String.init)?.trimmingSpaces ?? "", radix: 16) {
                text = (try? readBytes(min(size, 4096))) ?? []
            } else if length > 0 {
                text = (try? readBytes(min(length, 4096))) ?? []
            }
            let why = text.isEmpty ? "" : ": " + String(decoding: text, as: UTF8.self).trimmingSpaces
            close()
            throw WireError(.protocolError, "berthd answered \(statusLine)\(why)")
        }
        guard chunked else { throw WireError(.protocolError, "expected a chunked stream") }
        while true {
            let sizeLine = try readLine()
            guard let size = Int(sizeLine.trimmingSpaces, radix: 16) else { throw WireError(.protocolError, "bad chunk size") }
            if size == 0 { return }
            let data = try readBytes(size)
            _ = try readLine()
            if !onChunk(data) { close(); return }
        }
    }
}

extension String {
    public var trimmingSpaces: String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" || f == "\r" || f == "\n" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" || l == "\n" { s = s.dropLast() }
        return String(s)
    }
}

/// A TCP port on 127.0.0.1 that is free now (the kernel's pick for a bind to port 0), for test servers and benchmarks
/// that start their own etcd or listener (another process could take it before it is used).
public func freeLoopbackPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}
