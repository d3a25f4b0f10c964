// The API's listeners: the unix socket (bound in a private directory and renamed into place, so that it never exists
// under its name with a wider mode than 0660) and the optional TCP listener (TLS, per-connection deadlines, a cap on
// connections inside the file-descriptor budget), on separate event loops, so nothing done over TCP stops the socket.
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOHTTPTypes
import NIOPosix
import NIOSSL

public struct ListenerError: Error, CustomStringConvertible {
    public let description: String
}

extension APIServer {
    /// Runs the API until SIGTERM/SIGINT: the unix socket always, TCP when configured.
    public func run(logger: Logger) async throws {
        let site = runtime.site
        let socket = site.socketPath
        let deadlines = RequestDeadlines.Limits(site)
        let tcpServer = try site.listen.map { _ in try Self.tcpServer(site, deadlines) }
        let connectionCap = Self.connectionBudget(site.maxConnections, logger: logger)
        // Bound where nobody else can reach it, given its mode, then renamed into place: at no moment does the path
        // answer with the mode that the umask left on the new socket.
        let privateDir = try Self.privateDirectory(beside: socket)
        let bound = privateDir + "/s"
        var app = Application(
            router: makeRouter(),
            server: .http1(configuration: .init(additionalChannelHandlers: [RequestDeadlines(deadlines)])),
            configuration: .init(address: .unixDomainSocket(path: bound), serverName: "berthd"),
            onServerRunning: { _ in
                chmod(bound, 0o660)
                if rename(bound, socket) != 0 {
                    logger.error("cannot move the API socket into place at \(socket): \(String(cString: strerror(errno)))")
                }
                rmdir(privateDir)
                logger.info("berthd serving the API on unix socket \(socket)")
                _ = SocketLink.publish(site.socketLink, socket: socket, logger: logger)
            },
            logger: logger)
        if let listen = site.listen, let token = site.token, let tcpServer {
            let parts = listen.split(separator: ":")
            let host = String(parts[0]), port = Int(parts[1]) ?? 7420
            // Its own event loops: TLS handshakes and floods of connections over TCP never delay the unix socket.
            let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
            let tcp = Application(router: makeRouter(requireToken: token), server: tcpServer,
                                  configuration: .init(address: .hostname(host, port: port), serverName: "berthd",
                                                       availableConnectionsDelegate: MaximumAvailableConnections(connectionCap, logger: logger)),
                                  onServerRunning: { _ in
                                      logger.info("berthd serving the API on tcp \(listen) (\(site.tls == nil ? "plain HTTP on loopback" : "TLS"), bearer token required, at most \(connectionCap) connections)")
                                  },
                                  eventLoopGroupProvider: .shared(group), logger: logger)
            app.addServices(tcp)
        }
        defer {
            rmdir(privateDir)
            unlink(bound)
            SocketLink.withdraw(site.socketLink, socket: socket)
        }
        try await app.runService()
        unlink(socket)
    }

    /// The TCP listener's channel: HTTP/1.1 with the deadlines, inside TLS when the site has certificate and key.
    static func tcpServer(_ site: SiteConfig, _ limits: RequestDeadlines.Limits) throws -> HTTPServerBuilder {
        let http1 = HTTPServerBuilder.http1(configuration: .init(additionalChannelHandlers: [RequestDeadlines(limits)]))
        guard let files = site.tls else { return http1 }
        return try .tls(http1, tlsConfiguration: try tlsConfiguration(files))
    }

    /// Loads the site's TLS files; every failure names the key and the file.
    public static func tlsConfiguration(_ f: TLSFiles) throws -> TLSConfiguration {
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(f.certificate) } catch {
            throw ListenerError(description: "api.tls.certificate: cannot load \(f.certificate) as PEM certificates: \(error)")
        }
        if chain.isEmpty { throw ListenerError(description: "api.tls.certificate: \(f.certificate) holds no PEM certificate") }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(file: f.key, format: .pem) } catch {
            throw ListenerError(description: "api.tls.key: cannot load \(f.key) as a PEM private key: \(error)")
        }
        var c = TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        c.minimumTLSVersion = .tlsv12
        if let ca = f.clientCA {
            do { _ = try NIOSSLCertificate.fromPEMFile(ca) } catch {
                throw ListenerError(description: "api.tls.clientCA: cannot load \(ca) as PEM certificates: \(error)")
            }
            c.trustRoots = .file(ca)
            c.certificateVerification = .noHostnameVerification
        }
        do { _ = try NIOSSLContext(configuration: c) } catch {
            throw ListenerError(description: "api.tls: the certificate \(f.certificate) and the key \(f.key) do not make a TLS context (does the key belong to the certificate?): \(error)")
        }
        return c
    }

    /// Checks what only the server can check of a site's listener (the TLS files load and match): for start-up and --check.
    public static func checkListener(_ site: SiteConfig) throws {
        if let tls = site.tls { _ = try tlsConfiguration(tls) }
    }

    /// TCP connections allowed: the site's cap, lowered to half the file descriptors less a reserve, so that the unix
    /// socket, the store and the plugins always have descriptors left. Raises the soft RLIMIT_NOFILE to the hard one.
    static func connectionBudget(_ wanted: Int, logger: Logger) -> Int {
        var rl = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &rl) == 0 else { return wanted }
        if rl.rlim_cur < rl.rlim_max {
            var raised = rl
            raised.rlim_cur = rl.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { rl = raised }
        }
        let limit = rl.rlim_cur >= rlim_t(Int32.max) ? Int(Int32.max) : Int(rl.rlim_cur)
        let budget = max(8, limit / 2 - 64)
        if wanted > budget {
            logger.warning("api.maxConnections \(wanted) lowered to \(budget): the open-file limit (RLIMIT_NOFILE) is \(limit), and half of it (less 64) is kept for the unix socket, the store and the plugins; raise the limit (e.g. LimitNOFILE= in the systemd unit) to allow more")
            return budget
        }
        return wanted
    }

    /// A fresh directory of mode 0700 next to `socket` (same filesystem, so the rename into place is atomic).
    static func privateDirectory(beside socket: String) throws -> String {
        let dir = (socket as NSString).deletingLastPathComponent
        var template = Array("\(dir.isEmpty ? "." : dir)/.sXXXXXX".utf8CString)
        guard let p = mkdtemp(&template) else {
            throw ListenerError(description: "api.socket: cannot create a private directory beside \(socket) to bind it in: \(String(cString: strerror(errno)))")
        }
        return String(cString: p)
    }
}

/// Per-connection deadlines, at the level of HTTP parts: the first request head must be complete `header` after the
/// connection opened, a body `body` after its head; after a response, with no request in flight, the next head must
/// come within `idle`. A deadline that passes closes the connection. Nothing runs while a handler works on a request
/// whose body is read (long polls are not cut).
final class RequestDeadlines: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    struct Limits: Sendable {
        let header: TimeAmount
        let body: TimeAmount
        let idle: TimeAmount
        init(_ site: SiteConfig) {
            header = .milliseconds(Int64(site.headerTimeoutMs))
            body = .milliseconds(Int64(site.bodyTimeoutMs))
            idle = .milliseconds(Int64(site.idleTimeoutMs))
        }
    }

    let limits: Limits
    private var timer: Scheduled<Void>?
    private var started = false
    private var inFlight = 0
    private var readingBody = false

    init(_ limits: Limits) { self.limits = limits }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) { disarm() }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            inFlight += 1
            readingBody = true
            arm(context, limits.body)
        case .body:
            break
        case .end:
            readingBody = false
            if inFlight == 0 { arm(context, limits.idle) } else { disarm() }
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            inFlight = max(0, inFlight - 1)
            if inFlight == 0 && !readingBody { arm(context, limits.idle) }
        }
        context.write(data, promise: promise)
    }

    private func start(_ context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        arm(context, limits.header)
    }

    private func arm(_ context: ChannelHandlerContext, _ after: TimeAmount) {
        timer?.cancel()
        let channel = context.channel
        timer = context.eventLoop.scheduleTask(in: after) { channel.close(promise: nil) }
    }

    private func disarm() {
        timer?.cancel()
        timer = nil
    }
}
