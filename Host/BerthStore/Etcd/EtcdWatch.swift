// Tells a berthd when any berthd of the site appended events: a background thread holding one etcd v3 Watch on the
// site's event prefix (R + "ev/") through the JSON gateway (POST /v3/watch, answered as a chunked stream of JSON lines).
// The same watch, on the key-value prefix and with its changes, keeps the engine's local copy current (EtcdMirror).
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

    /// One watch on one member until its stream ends. `next` advances past every event seen.
    private func watchOnce(_ e: HTTPEndpoint, _ index: Int, from next: inout Int64, missed: inout Bool, established: () -> Void) -> End {
        let conn: UnixHTTPConnection, auth: [(String, String)]
        do {
            var one = settings
            one.endpoints = [settings.endpoints[index]]
            let c = try clients[index] ?? EtcdClient(one)
            clients[index] = c
            conn = c.connection(0)
            auth = try c.authHeaders(renew: renewToken)
            renewToken = false
            try conn.open()
        } catch { return .failed("\(error)") }
        lock.lock()
        if stopping { lock.unlock(); conn.close(); return .stopped }
        active = conn
        lock.unlock()
        defer {
            lock.lock()
            active = nil
            lock.unlock()
            conn.close()
        }
        var create: [(String, JSON)] = [("key", .string(Base64.encode(key))), ("range_end", .string(Base64.encode(Keys.prefixEnd(key))))]
        if onChanges == nil { create.append(("filters", ["NODELETE"])) }
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
                    if let end = handle(line, e, &next, &missed, &startedFromNow, { created = true; established() }) { outcome = end; return false }
                }
                return true
            }
        } catch let w as WireError {
            lock.lock()
            let stop = stopping
            lock.unlock()
            if stop { return .stopped }
            // Idle after the watch was created: the same member again. Before: it does not answer; the next one.
            if outcome == nil && w.message.hasPrefix("timed out") { return created ? .idle : .failed("no answer within \(settings.timeoutSeconds) s") }
            return outcome ?? .failed(w.message)
        } catch {
            return outcome ?? .failed("\(error)")
        }
        return outcome ?? .failed("the member ended the watch stream")
    }

    /// One message of the stream; returns how the stream ends when this message ends it.
    private func handle(_ line: [UInt8], _ e: HTTPEndpoint, _ next: inout Int64, _ missed: inout Bool, _ fromNow: inout Bool,
                        _ established: () -> Void) -> End? {
        guard let j = try? JSON.parse(line) else {
            return .failed("the watch stream carried something that is not JSON: \(String(decoding: line.prefix(120), as: UTF8.self))")
        }
        if let err = j["error"] {
            return .failed("etcd ended the watch: \(err["message"]?.string ?? err.serialized)")
        }
        guard let r = j["result"] else { return nil }
        if r["canceled"]?.bool == true {
            if EtcdClient.int(r["compact_revision"]) > 0 { return .compacted }
            return .failed("etcd cancelled the watch: \(r["cancel_reason"]?.string ?? r.serialized)")
        }
        if r["created"]?.bool == true {
            // From now: every event after the header's revision comes on this stream.
            if fromNow { next = EtcdClient.int(r["header"]?["revision"]) + 1; fromNow = false }
            established()
            if missed { missed = false; onChange(nil) }
            lock.lock()
            watching = true
            connectedTo = settings.endpoints.first { $0.contains(e.description) } ?? "http://" + e.description
            lock.unlock()
            return nil
        }
        let events = r["events"]?.array ?? []
        if let onChanges, !events.isEmpty {
            var changes: [WatchedChange] = []
            for ev in events {
                guard let kv = ev["kv"], let k = try? EtcdClient.bytes(kv["key"]), let v = try? EtcdClient.bytes(kv["value"]) else {
                    return .failed("the watch stream carried an event without a readable key: \(ev.serialized.prefix(120))")
                }
                changes.append(WatchedChange(key: k, value: ev["type"]?.string == "DELETE" ? nil : v, mod: EtcdClient.int(kv["mod_revision"])))
            }
            onChanges(changes)
        }
        if let last = events.compactMap({ EtcdClient.int($0["kv"]?["mod_revision"]) }).max() {
            next = max(next, last + 1)
            if onChanges != nil { return nil }
            // Each event's revision is its commit's etcd revision x eventsPerTxn + its index `i` (EtcdStore.swift).
            let seen = events.compactMap { ev -> EtcdWatchedEvent? in
                guard let kv = ev["kv"], let v = try? EtcdClient.bytes(kv["value"]), let j = try? JSON.parse(v) else { return nil }
                return EtcdWatchedEvent(revision: EtcdClient.int(kv["mod_revision"]) * EtcdStore.eventsPerTxn + EtcdClient.int(j["i"]),
                                        type: j["type"]?.string ?? "")
            }
            onChange(seen.count == events.count ? seen : nil)
        } else if !fromNow {
            // A progress notification: every event up to the header's revision was sent.
            next = max(next, EtcdClient.int(r["header"]?["revision"]) + 1)
        }
        return nil
    }
}
