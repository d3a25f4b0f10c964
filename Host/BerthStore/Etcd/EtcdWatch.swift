// Tells a berthd when any berthd of the site appended events: a background thread holding one etcd v3 Watch on the
// site's event prefix (R + "ev/"), a gRPC stream (GRPC.swift) or, when that is not established or not wanted, the JSON
// gateway's (POST /v3/watch, a chunked stream of JSON lines). The same watch, on the key-value prefix and with its
// changes, keeps the engine's local copy current (EtcdMirror).
import BerthWire
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Watches the site's event keys and calls `onChange` (on its own thread) whenever events were created by any writer,
/// this berthd's included. `onChange` carries no events: the consumer reads them with `events(since:)` from its own
/// cursor, so a call too many costs one read and a call too few is what this class must never make.
///
/// It calls `onChange` too when events may have been missed: once the watch is first created (events appended before
/// it existed), after reconnecting following an error (the member it watched died: the next endpoint is tried, with
/// backoff), and when etcd cancelled the watch because the revision it resumes from was compacted (it restarts from
/// the current revision). After an idle read timeout (no event within the settings' timeout; a silent member is
/// noticed that way) it resumes from the revision after the last event seen, so nothing is missed and nothing extra
/// is called. Deletes (event retention) are filtered out by etcd.
/// An event a watch of the event log saw: its revision (as `events(since:)` gives it) and type.
public struct EtcdWatchedEvent: Sendable {
    public var revision: Int64
    public var type: String
}

/// One change a watch saw: a key put (its value) or deleted (nil), at mod revision `mod`.
struct WatchedChange {
    var key: [UInt8]
    var value: [UInt8]?
    var mod: Int64
}

public final class EtcdWatch: @unchecked Sendable {
    private let settings: EtcdSettings
    /// The endpoints, each parsed or the clear error of a malformed one (reported as the watch's failure).
    private let endpoints: [Result<HTTPEndpoint, BerthError>]
    private let key: [UInt8]
    private let onChange: @Sendable ([EtcdWatchedEvent]?) -> Void
    /// Given the changes of each message (the copy's watch): deletes too, and the revision to start from.
    private let onChanges: (([WatchedChange]) -> Void)?
    private let onCompacted: (() -> Void)?
    private let startRevision: Int64
    private let lock = NSCondition()
    // Guarded by `lock`:
    private var stopping = false
    private var running = false
    /// The connection of the watch in progress (interrupted by `stop()`), and per endpoint the client that makes
    /// its connections (plain or TLS) and authenticates them.
    private var active: UnixHTTPConnection?
    private var clients: [Int: EtcdClient] = [:]
    /// The last watch was refused for its token (etcd authentication): ask for a new one first.
    private var renewToken = false
    private var watching = false
    private var connectedTo: String?
    private var over = "grpc"
    /// The transport of the attempt in progress (the watch thread's own).
    private var attempt = "grpc"
    private var reconnectCount = 0
    private var lastError: String?
    private let done = DispatchSemaphore(value: 0)

    /// Watches the event prefix of `settings`' site; nothing happens before `start()`. Endpoints are checked by
    /// `EtcdSettings.validated()` (as EtcdStore does); one that is malformed anyway is skipped with its error as
    /// `lastFailure`.
    public convenience init(_ settings: EtcdSettings, onChange: @escaping @Sendable () -> Void) {
        self.init(settings, onEvents: { _ in onChange() })
    }

    /// As `init(_:onChange:)`, and `onEvents` is given the events seen (revision and type), or nil when events may
    /// have been missed (the consumer then reads from its cursor).
    public init(_ settings: EtcdSettings, onEvents: @escaping @Sendable ([EtcdWatchedEvent]?) -> Void) {
        self.settings = settings
        endpoints = settings.endpoints.map { e in
            Result { try EtcdClient.parse(e) }.mapError { $0 as? BerthError ?? BerthError(.invalidArgument, "\($0)") }
        }
        key = Array((settings.prefix ?? "/berth/\(settings.site)/").utf8) + Array("ev/".utf8)
        onChange = onEvents
        onChanges = nil
        onCompacted = nil
        startRevision = 0
    }

    /// Watches the keys under `key` from revision `from`, deletes included: `onChanges` gets each message's changes
    /// in revision order (one revision's changes always in one call), `onCompacted` is called when etcd no longer
    /// has the revision the watch resumes from (changes were missed; the watch then goes on from the current one).
    init(_ settings: EtcdSettings, key: [UInt8], from: Int64, onChanges: @escaping ([WatchedChange]) -> Void, onCompacted: @escaping () -> Void) {
        self.settings = settings
        endpoints = settings.endpoints.map { e in
            Result { try EtcdClient.parse(e) }.mapError { $0 as? BerthError ?? BerthError(.invalidArgument, "\($0)") }
        }
        self.key = key
        onChange = { _ in }
        self.onChanges = onChanges
        self.onCompacted = onCompacted
        startRevision = from
    }

    deinit { stop() }

    /// True while a watch is established on a member (created and its stream open).
    public var isWatching: Bool { lock.lock(); defer { lock.unlock() }; return watching }
    /// The endpoint the watch is on (nil while it is not established).
    public var endpoint: String? { lock.lock(); defer { lock.unlock() }; return connectedTo }
    /// How the established watch reaches etcd: "grpc", or "json" (the gateway); nil while it is not established.
    public var transport: String? { lock.lock(); defer { lock.unlock() }; return watching ? over : nil }
    /// How many times the watch was re-established after it was lost (errors and idle timeouts).
    public var reconnects: Int { lock.lock(); defer { lock.unlock() }; return reconnectCount }
    /// Why the watch was last lost (nil: never).
    public var lastFailure: String? { lock.lock(); defer { lock.unlock() }; return lastError }

    /// Starts the watch thread (once; a stopped watch does not start again).
    public func start() {
        lock.lock()
        defer { lock.unlock() }
        guard !running && !stopping else { return }
        running = true
        let t = Thread { [self] in loop(); done.signal() }
        t.name = "berth-etcd-watch"
        t.start()
    }

    /// Stops the thread and waits for it: a blocked read is ended by shutting its socket down.
    public func stop() {
        lock.lock()
        let wasRunning = running && !stopping
        stopping = true
        active?.interrupt()
        lock.broadcast()
        lock.unlock()
        if wasRunning { done.wait() }
    }

    /// How a watch stream ended.
    enum End { case stopped, idle, compacted, failed(String) }

    private func loop() {
        var index = 0
        var next: Int64 = startRevision  // the revision to resume from (0: from now)
        var pause = 0.05
        var missed = true  // the consumer must look once the watch is (re)created
        while true {
            let end: End, e: String
            switch endpoints.isEmpty ? .failure(BerthError(.invalidArgument, "store.endpoints is empty")) : endpoints[index] {
            case .success(let ep):
                e = ep.description
                end = watchOnce(ep, index, from: &next, missed: &missed, established: { pause = 0.05 })
            case .failure(let error):
                e = endpoints.isEmpty ? "etcd" : settings.endpoints[index]
                end = .failed(error.message)
            }
            lock.lock()
            watching = false
            connectedTo = nil
            if case .stopped = end { lock.unlock(); return }
            if stopping { lock.unlock(); return }
            reconnectCount += 1
            switch end {
            case .idle:
                lastError = "no event within \(settings.timeoutSeconds) s on \(e): reconnected"
                lock.unlock()
                continue  // the same member, resuming after the last event seen
            case .compacted:
                lastError = "etcd compacted the revision the watch resumed from (\(next)): restarted from the current revision"
                onCompacted?()
                next = 0
                missed = true
                lock.unlock()
                continue
            case .failed(let why):
                lastError = "\(e): \(why)"
                if EtcdClient.tokenRefused(why) { renewToken = true }
                missed = true
                index = (index + 1) % max(endpoints.count, 1)
                _ = lock.wait(until: Date().addingTimeInterval(pause))  // stop() wakes it
                pause = min(pause * 2, 2)
                let stop = stopping
                lock.unlock()
                if stop { return }
            case .stopped:
                lock.unlock()
                return
            }
        }
    }

    /// One watch on one member until its stream ends. `next` advances past every event seen. Over gRPC unless the
    /// settings say otherwise; a gRPC watch that etcd did not establish (it ended the call, cancelled the watch as it
    /// created it, or the member does not speak HTTP/2 there) is asked of the same member's JSON gateway at once,
    /// which either works or answers why in words (a refused token among them).
    private func watchOnce(_ e: HTTPEndpoint, _ index: Int, from next: inout Int64, missed: inout Bool, established: () -> Void) -> End {
        var created = false
        if settings.grpc {
            let end = watchOnceGRPC(e, index, from: &next, missed: &missed, established: { created = true; established() })
            switch end {
            case .failed(let why) where !created && why.hasPrefix(EtcdWatch.notEstablished): break
            default: return end
            }
        }
        return watchOnceJSON(e, index, from: &next, missed: &missed, established: established)
    }

    /// The client of endpoint `index` (made once), and the headers that authenticate a request to it.
    private func client(_ index: Int) throws -> (EtcdClient, [(String, String)]) {
        var one = settings
        one.endpoints = [settings.endpoints[index]]
        let c = try clients[index] ?? EtcdClient(one)
        clients[index] = c
        let auth = try c.authHeaders(renew: renewToken)
        renewToken = false
        return (c, auth)
    }

    /// Makes `conn` the active connection (interrupted by `stop()`), or says the watch is stopping.
    private func activate(_ conn: UnixHTTPConnection) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if stopping { return false }
        active = conn
        return true
    }

    private func deactivate(_ conn: UnixHTTPConnection) {
        lock.lock()
        active = nil
        lock.unlock()
        conn.close()
    }

    /// How a stream that threw `error` ended: stopped, idle (it timed out after the watch was created), or failed.
    private func ending(_ error: Error, created: Bool, outcome: End?) -> End {
        lock.lock()
        let stop = stopping
        lock.unlock()
        if stop { return .stopped }
        if let outcome { return outcome }
        let message = (error as? WireError)?.message ?? "\(error)"
        // Idle after the watch was created: the same member again. Before: it does not answer; the next one.
        if message.hasPrefix("timed out") { return created ? .idle : .failed("no answer within \(settings.timeoutSeconds) s") }
        return .failed(message)
    }

    /// The event log's watch has etcd filter deletes out (retention's); the copy's needs them.
    private var withoutDeletes: Bool { onChanges == nil }

    /// How a gRPC watch that etcd did not establish fails (the JSON gateway is then asked).
    static let notEstablished = "etcd did not establish the gRPC watch"

    /// One watch over etcd's gRPC Watch (GRPC.swift).
    private func watchOnceGRPC(_ e: HTTPEndpoint, _ index: Int, from next: inout Int64, missed: inout Bool, established: () -> Void) -> End {
        let conn: UnixHTTPConnection, secure: Bool, auth: [(String, String)]
        do {
            let (c, headers) = try client(index)
            (conn, secure) = try c.grpcConnection(0)
            auth = headers.map { ("token", $0.1) }
            try conn.open()
        } catch { return .failed("\(error)") }
        guard activate(conn) else { conn.close(); return .stopped }
        defer { deactivate(conn) }
        attempt = "grpc"
        var create: [UInt8] = []
        Protobuf.bytes(1, key, into: &create)
        Protobuf.bytes(2, Keys.prefixEnd(key), into: &create)
        Protobuf.int(3, next, into: &create)
        if withoutDeletes { Protobuf.int(5, 1, into: &create) }  // filters: NODELETE
        var request: [UInt8] = []
        Protobuf.bytes(1, create, into: &request)  // WatchRequest.create_request
        var startedFromNow = next == 0
        var created = false
        var outcome: End?
        let call = GRPCConnection(conn, authority: e.description, secure: secure)
        do {
            // "hasleader": as in watchOnceJSON.
            let id = try call.open("/etcdserverpb.Watch/Watch", metadata: [("hasleader", "true")] + auth, message: request, last: false)
            while outcome == nil {
                let m = try call.next(id)
                let message: WatchMessage
                do { message = try WatchMessage(protobuf: m) } catch { return .failed("\(error)") }
                if !created && message.canceled && message.compactRevision == 0 { return .failed(EtcdWatch.notEstablished + ": " + message.cancelReason) }
                outcome = apply(message, e, &next, &missed, &startedFromNow, { created = true; established() })
            }
            return outcome ?? .failed("the member ended the watch stream")
        } catch let status as GRPCStatus {
            // etcd's own refusal (a refused token, "no leader"): as the gateway's would be.
            return ending(status, created: created, outcome: .failed("etcd ended the watch: \(status.message)"))
        } catch let ended as GRPCConnection.Ended where !created {
            return ending(ended, created: created, outcome: .failed(EtcdWatch.notEstablished + ": " + ended.description))
        } catch {
            return ending(error, created: created, outcome: outcome)
        }
    }

    /// One watch over the JSON gateway (POST /v3/watch, a chunked stream of JSON lines).
    private func watchOnceJSON(_ e: HTTPEndpoint, _ index: Int, from next: inout Int64, missed: inout Bool, established: () -> Void) -> End {
        let conn: UnixHTTPConnection, auth: [(String, String)]
        do {
            let (c, headers) = try client(index)
            conn = c.connection(0)
            auth = headers
            try conn.open()
        } catch { return .failed("\(error)") }
        guard activate(conn) else { conn.close(); return .stopped }
        defer { deactivate(conn) }
        attempt = "json"
        var create: [(String, JSON)] = [("key", .string(Base64.encode(key))), ("range_end", .string(Base64.encode(Keys.prefixEnd(key))))]
        if withoutDeletes { create.append(("filters", ["NODELETE"])) }
        if next > 0 { create.append(("start_revision", .string(String(next)))) }
        var pending: [UInt8] = []
        var outcome: End?
        var startedFromNow = next == 0
        var created = false
        do {
            // "hasleader": a member that lost its leader (cut off from the others) refuses to create the watch (503,
            // "no leader") instead of serving a silent one, so the watch moves on to another member when it is
            // created again after the idle timeout.
            try conn.stream("POST", "/v3/watch", body: JSON.object([("create_request", .object(create))]).bytes,
                            headers: [("Grpc-Metadata-hasleader", "true")] + auth) { chunk in
                pending += chunk
                while let nl = pending.firstIndex(of: 0x0A) {
                    let line = Array(pending[..<nl])
                    pending.removeSubrange(...nl)
                    guard line.contains(where: { $0 != 0x20 && $0 != 0x0D }) else { continue }
                    let end: End?
                    switch Result(catching: { try WatchMessage(json: line) }) {
                    case .success(let m): end = apply(m, e, &next, &missed, &startedFromNow, { created = true; established() })
                    case .failure(let error): end = .failed("\(error)")
                    }
                    if let end { outcome = end; return false }
                }
                return true
            }
        } catch {
            return ending(error, created: created, outcome: outcome)
        }
        return outcome ?? .failed("the member ended the watch stream")
    }

    /// One message of the stream, however it came; returns how the stream ends when this message ends it.
    private func apply(_ r: WatchMessage, _ e: HTTPEndpoint, _ next: inout Int64, _ missed: inout Bool, _ fromNow: inout Bool,
                       _ established: () -> Void) -> End? {
        if let error = r.error { return .failed("etcd ended the watch: \(error)") }
        if r.canceled {
            if r.compactRevision > 0 { return .compacted }
            return .failed("etcd cancelled the watch: \(r.cancelReason)")
        }
        if r.created {
            // From now: every event after the header's revision comes on this stream.
            if fromNow { next = r.headerRevision + 1; fromNow = false }
            established()
            if missed { missed = false; onChange(nil) }
            lock.lock()
            watching = true
            connectedTo = settings.endpoints.first { $0.contains(e.description) } ?? "http://" + e.description
            over = attempt
            lock.unlock()
            return nil
        }
        if let onChanges, !r.events.isEmpty { onChanges(r.events) }
        if let last = r.events.map(\.mod).max() {
            next = max(next, last + 1)
            if onChanges != nil { return nil }
            // Each event's revision is its commit's etcd revision x eventsPerTxn + its index `i` (EtcdStore.swift).
            let seen = r.events.compactMap { ev -> EtcdWatchedEvent? in
                guard let v = ev.value else { return nil }
                if let (i, type) = EtcdStore.indexAndType(v) { return EtcdWatchedEvent(revision: ev.mod * EtcdStore.eventsPerTxn + i, type: type) }
                guard let j = try? JSON.parse(v) else { return nil }
                return EtcdWatchedEvent(revision: ev.mod * EtcdStore.eventsPerTxn + EtcdClient.int(j["i"]), type: j["type"]?.string ?? "")
            }
            onChange(seen.count == r.events.count ? seen : nil)
        } else if !fromNow {
            // A progress notification: every event up to the header's revision was sent.
            next = max(next, r.headerRevision + 1)
        }
        return nil
    }
}

/// One message of a watch stream (etcd's WatchResponse), read from the gateway's JSON or from gRPC's protobuf.
struct WatchMessage {
    /// The gateway's error object's message (gRPC ends the call instead).
    var error: String?
    var created = false
    var canceled = false
    var compactRevision: Int64 = 0
    var cancelReason = ""
    var headerRevision: Int64 = 0
    var events: [WatchedChange] = []

    struct Unreadable: Error, CustomStringConvertible {
        var description: String
    }

    init(json line: [UInt8]) throws {
        guard let j = try? JSON.parse(line) else {
            throw Unreadable(description: "the watch stream carried something that is not JSON: \(String(decoding: line.prefix(120), as: UTF8.self))")
        }
        if let err = j["error"] { error = err["message"]?.string ?? err.serialized; return }
        guard let r = j["result"] else { return }
        created = r["created"]?.bool == true
        canceled = r["canceled"]?.bool == true
        compactRevision = EtcdClient.int(r["compact_revision"])
        cancelReason = r["cancel_reason"]?.string ?? r.serialized
        headerRevision = EtcdClient.int(r["header"]?["revision"])
        for ev in r["events"]?.array ?? [] {
            guard let kv = ev["kv"], let k = try? EtcdClient.bytes(kv["key"]), let v = try? EtcdClient.bytes(kv["value"]) else {
                throw Unreadable(description: "the watch stream carried an event without a readable key: \(ev.serialized.prefix(120))")
            }
            events.append(WatchedChange(key: k, value: ev["type"]?.string == "DELETE" ? nil : v, mod: EtcdClient.int(kv["mod_revision"])))
        }
    }

    /// WatchResponse: header 1 (ResponseHeader: revision 3), created 3, canceled 4, compact_revision 5,
    /// cancel_reason 6, events 11 (mvccpb.Event: type 1, DELETE = 1; kv 2: key 1, mod_revision 3, value 5).
    init(protobuf m: [UInt8]) throws {
        for f in try Protobuf.fields(m[...]) {
            switch f.number {
            case 1: headerRevision = try Protobuf.fields(f.bytes).first { $0.number == 3 }?.int ?? 0
            case 3: created = f.varint != 0
            case 4: canceled = f.varint != 0
            case 5: compactRevision = f.int
            case 6: cancelReason = String(decoding: f.bytes, as: UTF8.self)
            case 11:
                var delete = false, key: [UInt8]?, value: [UInt8] = [], mod: Int64 = 0
                for g in try Protobuf.fields(f.bytes) {
                    if g.number == 1 { delete = g.varint == 1 }
                    guard g.number == 2 else { continue }
                    for h in try Protobuf.fields(g.bytes) {
                        switch h.number {
                        case 1: key = Array(h.bytes)
                        case 3: mod = h.int
                        case 5: value = Array(h.bytes)
                        default: break
                        }
                    }
                }
                guard let key else { throw Unreadable(description: "the watch stream carried an event without a key") }
                events.append(WatchedChange(key: key, value: delete ? nil : value, mod: mod))
            default: break
            }
        }
    }
}
