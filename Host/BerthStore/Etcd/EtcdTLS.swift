// TLS to etcd (https:// endpoints, store.tls): a blocking byte stream over a SwiftNIO channel with NIOSSL, so that the
// etcd client's HTTP/1.1 (BerthWire's UnixHTTPConnection) runs unchanged over it. The server's certificate is checked
// against store.tls.ca (and its name or IP address against the endpoint's); a client certificate is sent when set.
import BerthWire
import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// The PEM files of a TLS connection to etcd.
public struct EtcdTLSFiles: Sendable, Equatable {
    /// The CA that signed the members' certificates (nil: the system's trust roots).
    public var ca: String?
    /// A client certificate and its key (both or neither), for members started with --client-cert-auth.
    public var certificate: String?
    public var key: String?
    public init(ca: String? = nil, certificate: String? = nil, key: String? = nil) {
        self.ca = ca; self.certificate = certificate; self.key = key
    }

    /// The client configuration; a file that cannot be read or parsed is an error naming it.
    func configuration() throws -> TLSConfiguration {
        var c = TLSConfiguration.makeClientConfiguration()
        do {
            if let ca { c.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca)) }
            if let certificate { c.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) } }
            if let key { c.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)) }
        } catch {
            throw BerthError(.invalidArgument, "store.tls: cannot load the PEM files (ca \(ca ?? "-"), certificate \(certificate ?? "-"), key \(key ?? "-")): \(error)")
        }
        return c
    }
}

/// One TLS connection to a member, read and written by one thread at a time (the etcd client's).
final class TLSByteStream: ByteStream, @unchecked Sendable {
    /// One event loop thread for every TLS connection of the process: they carry a few requests a second each.
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    private let channel: Channel
    private let inbox: Inbox

    init(host: String, port: Int, context: NIOSSLContext, timeoutSeconds: Int) throws {
        let inbox = Inbox()
        self.inbox = inbox
        var v4 = in_addr(), v6 = in6_addr()
        let numeric = inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
        let bootstrap = ClientBootstrap(group: Self.group)
            .connectTimeout(.seconds(Int64(max(timeoutSeconds, 1))))
            .channelInitializer { ch in
                ch.eventLoop.makeCompletedFuture {
                    // A name is sent (SNI) and checked against the certificate; an address is checked against its IP SANs.
                    let tls = try NIOSSLClientHandler(context: context, serverHostname: numeric ? nil : host)
                    try ch.pipeline.syncOperations.addHandlers([tls, InboxHandler(inbox)])
                }
            }
        do {
            channel = try bootstrap.connect(host: host, port: port).wait()
        } catch {
            throw WireError(.unreachable, "cannot connect to etcd at \(host):\(port) (TLS): \(error)")
        }
    }

    func write(_ bytes: [UInt8]) throws {
        do { try channel.writeAndFlush(ByteBuffer(bytes: bytes)).wait() } catch {
            throw WireError(.io, "TLS write to etcd failed: \(inbox.failure.map { "\($0)" } ?? "\(error)")")
        }
    }

    func read(timeoutSeconds: Int) throws -> [UInt8] { try inbox.take(timeoutSeconds: timeoutSeconds) }

    func close() { channel.close(promise: nil) }

    /// What the channel received, handed to the reading thread.
    final class Inbox: @unchecked Sendable {
        private let cond = NSCondition()
        private var bytes: [UInt8] = []
        private var ended = false
        private(set) var failure: Error?

        func put(_ b: [UInt8]) { cond.withLock { bytes += b; cond.signal() } }
        func end(_ error: Error?) { cond.withLock { ended = true; if failure == nil { failure = error }; cond.signal() } }

        func take(timeoutSeconds: Int) throws -> [UInt8] {
            cond.lock()
            defer { cond.unlock() }
            let deadline = Date().addingTimeInterval(Double(timeoutSeconds > 0 ? timeoutSeconds : 86_400))
            while bytes.isEmpty && !ended {
                if !cond.wait(until: deadline) { throw WireError(.io, "timed out waiting for etcd after \(timeoutSeconds)s") }
            }
            if !bytes.isEmpty {
                defer { bytes = [] }
                return bytes
            }
            if let failure { throw WireError(.io, "TLS connection to etcd failed: \(failure)") }
            return []
        }
    }

    final class InboxHandler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let inbox: Inbox
        init(_ inbox: Inbox) { self.inbox = inbox }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var b = unwrapInboundIn(data)
            inbox.put(b.readBytes(length: b.readableBytes) ?? [])
        }
        func channelInactive(context: ChannelHandlerContext) { inbox.end(nil) }
        func errorCaught(context: ChannelHandlerContext, error: Error) {
            inbox.end(error)
            context.close(promise: nil)
        }
    }
}
