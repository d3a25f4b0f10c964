// Large pool documents are parsed and validated off the transaction thread: a pool.import whose request is
// `prepareBytes` or more answers "continue" at once and parses on a thread of its own; the host's next steps find it
// done (or answer "continue" again, a few milliseconds later) and only then touch the store. Steps of a staged import
// read just the top-level keys they need (`TopLevel`), not the whole megabyte document the host sends every time.

import BerthPluginKit

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The values of some top-level keys of a JSON object, found by skipping over everything else (a document of a
/// megabyte in about a millisecond, where building it took far longer). The last occurrence of a key wins, as JV.parse
/// keeps it. Nil when the text is not an object, or a key has escapes: the caller then parses it all, as before.
enum TopLevel {
    static func slices(_ bytes: [UInt8], _ keys: Set<String>) -> [String: ArraySlice<UInt8>]? {
        bytes.withUnsafeBufferPointer { b -> [String: ArraySlice<UInt8>]? in
            var out: [String: ArraySlice<UInt8>] = [:]
            var i = 0
            func ws() { while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 } }
            ws()
            guard i < b.count, b[i] == UInt8(ascii: "{") else { return nil }
            i += 1
            ws()
            if i < b.count, b[i] == UInt8(ascii: "}") { return out }
            while true {
                ws()
                guard i < b.count, b[i] == UInt8(ascii: "\"") else { return nil }
                let k0 = i + 1
                guard skipString(b, &i) else { return nil }
                let keyBytes = UnsafeBufferPointer(rebasing: b[k0..<(i - 1)])
                if keyBytes.contains(UInt8(ascii: "\\")) { return nil }
                ws()
                guard i < b.count, b[i] == UInt8(ascii: ":") else { return nil }
                i += 1
                ws()
                let v0 = i
                guard skipValue(b, &i), i > v0 else { return nil }
                let key = String(decoding: keyBytes, as: UTF8.self)
                if keys.contains(key) { out[key] = bytes[v0..<i] }
                ws()
                guard i < b.count else { return nil }
                if b[i] == UInt8(ascii: ",") { i += 1; continue }
                if b[i] == UInt8(ascii: "}") { return out }
                return nil
            }
        }
    }

    /// The scanner at an opening quote: moves past the closing one.
    private static func skipString(_ b: UnsafeBufferPointer<UInt8>, _ i: inout Int) -> Bool {
        i += 1
        while i < b.count {
            switch b[i] {
            case UInt8(ascii: "\\"): i += 2
            case UInt8(ascii: "\""): i += 1; return true
            default: i += 1
            }
        }
        return false
    }

    /// Moves past one value (nested objects and arrays included). Grammar is not checked beyond the nesting: the
    /// host sends what it has parsed and serialised itself, and a caller that finds nothing falls back to JV.parse.
    private static func skipValue(_ b: UnsafeBufferPointer<UInt8>, _ i: inout Int) -> Bool {
        var depth = 0
        repeat {
            guard i < b.count else { return false }
            switch b[i] {
            case UInt8(ascii: "\""): guard skipString(b, &i) else { return false }
            case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1; i += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if depth == 0 { return false }
                depth -= 1
                i += 1
            default:
                if depth > 0 { i += 1; continue }
                // A number or literal at the top of the value: up to the next delimiter.
                while i < b.count, b[i] != UInt8(ascii: ","), b[i] != UInt8(ascii: "}"), b[i] != UInt8(ascii: "]"),
                      b[i] != 0x20, b[i] != 0x0A, b[i] != 0x0D, b[i] != 0x09 { i += 1 }
                return true
            }
        } while depth > 0
        return true
    }

    /// The parsed values of `keys` (those present and valid JSON), or nil as `slices` says.
    static func values(_ bytes: [UInt8], _ keys: Set<String>) -> [String: JV]? {
        guard let s = slices(bytes, keys) else { return nil }
        var out: [String: JV] = [:]
        for (k, v) in s {
            guard let j = try? JV.parse(Array(v)) else { return nil }
            out[k] = j
        }
        return out
    }
}

/// A pool document parsed and validated away from the store, with the bytes its import writes, serialised there too.
/// `spec` is the document validated as a NEW pool; an import that finds the pool existing merges and validates again.
struct PreparedImport {
    var doc: JV? = nil
    var failure: PluginError? = nil
    var spec: Result<PoolSpec, Error>? = nil
    var mergedBytes: [UInt8] = []
    var defBytes: [UInt8] = []
    var canonicalBytes: [UInt8] = []

    init(_ request: [UInt8]) {
        let parsed: JV
        do { parsed = try JV.parse(request) } catch let e as JV.ParseError {
            failure = PluginError(.invalidArgument, "request is not valid JSON (at byte \(e.offset): \(e.reason))")
            return
        } catch {
            failure = PluginError(.invalidArgument, "request is not valid JSON")
            return
        }
        guard case .object(let kv) = parsed else {
            failure = PluginError(.invalidArgument, "request must be a JSON object, got \(parsed.typeName)")
            return
        }
        let doc: JV = .object(kv.filter { $0.0 != "continue" })  // a restarted preparation carries the host's token
        self.doc = doc
        guard doc["name"]?.string != nil else { return }  // importPool says what is wrong
        var merged: JV = .object([])  // as importPool merges into a pool that does not exist
        for (k, v) in kv where PoolSpec.fields.contains(k) { merged[k] = v }
        do {
            let s = try PoolSpec.parse(merged)
            spec = .success(s)
            mergedBytes = merged.bytes
            defBytes = s.def.json.bytes
            canonicalBytes = s.canonical.bytes
        } catch {
            spec = .failure(error)
        }
    }
}

/// The preparations in progress and done, by id. Each runs on a thread of its own; a done one waits here until the
/// step that asks for it takes it (a few are kept; one evicted is prepared again from the request, which every step
/// carries). `finishAll` joins every thread (the plugin's code must not run after its instance is gone).
final class Preparations: @unchecked Sendable {
    enum Taken { case pending, done(PreparedImport), unknown }
    private var results: [Int64: PreparedImport] = [:]
    private var threads: [Int64: pthread_t] = [:]
    /// A random secret per preparation, in its "continue" token: a request cannot pick up another one's document.
    private var secrets: [Int64: String] = [:]
    /// Threads of evicted preparations, finished or returning: joined by the next `start` or `finishAll`.
    private var zombies: [pthread_t] = []
    private var nextID: Int64 = 1
    private var lock = pthread_mutex_t()
    private var cond = pthread_cond_t()
    /// Done preparations kept for their steps: more (abandoned requests) evicts the oldest.
    static let keep = 4

    init() {
        pthread_mutex_init(&lock, nil)
        pthread_cond_init(&cond, nil)
    }

    private final class Job {
        let id: Int64
        let request: [UInt8]
        let owner: Preparations
        init(_ id: Int64, _ request: [UInt8], _ owner: Preparations) { self.id = id; self.request = request; self.owner = owner }
    }

    /// Starts preparing `request`; returns its id and secret, or nil when no thread could be started (the caller then
    /// parses it inline).
    func start(_ request: [UInt8]) -> (id: Int64, secret: String)? {
        let secret = String(UInt64.random(in: 1...UInt64.max), radix: 16)
        pthread_mutex_lock(&lock)
        let id = nextID
        nextID += 1
        secrets[id] = secret
        let dead = zombies
        zombies = []
        pthread_mutex_unlock(&lock)
        for t in dead { pthread_join(t, nil) }
        let job = Unmanaged.passRetained(Job(id, request, self)).toOpaque()
        var tid = pthread_t()
        let rc = pthread_create(&tid, nil, { arg in
            let job = Unmanaged<Job>.fromOpaque(arg!).takeRetainedValue()
            job.owner.finish(job.id, PreparedImport(job.request))
            return nil
        }, job)
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        guard rc == 0 else {
            Unmanaged<Job>.fromOpaque(job).release()
            secrets[id] = nil
            return nil
        }
        threads[id] = tid
        return (id, secret)
    }

    private func finish(_ id: Int64, _ p: PreparedImport) {
        pthread_mutex_lock(&lock)
        results[id] = p
        while results.count > Self.keep, let oldest = results.keys.filter({ $0 != id }).min() {
            results[oldest] = nil
            if let t = threads.removeValue(forKey: oldest) { zombies.append(t) }  // its step will prepare it again
            secrets[oldest] = nil
        }
        pthread_cond_broadcast(&cond)
        pthread_mutex_unlock(&lock)
    }

    /// The preparation `id`: waits for it up to `ms` milliseconds, then says it is still pending. A done one is
    /// handed out once (its thread joined).
    func take(_ id: Int64, secret: String, waitingUpTo ms: Int) -> Taken {
        var deadline = timespec()
        clock_gettime(CLOCK_REALTIME, &deadline)
        deadline.tv_nsec += ms * 1_000_000
        deadline.tv_sec += deadline.tv_nsec / 1_000_000_000
        deadline.tv_nsec %= 1_000_000_000
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        guard secrets[id] == secret else { return .unknown }
        while true {
            if results[id] != nil { return take(id) }
            guard threads[id] != nil else { return .unknown }  // evicted, or from another instance of the plugin
            if pthread_cond_timedwait(&cond, &lock, &deadline) != 0 { return results[id] == nil ? .pending : take(id) }
        }
    }

    private func take(_ id: Int64) -> Taken {  // the lock held
        guard let r = results.removeValue(forKey: id) else { return .pending }
        if let t = threads.removeValue(forKey: id) { pthread_join(t, nil) }  // it has finished, or is returning
        secrets[id] = nil
        return .done(r)
    }

    /// Joins every preparation thread (done or not) and forgets them.
    func finishAll() {
        pthread_mutex_lock(&lock)
        let all = Array(threads.values) + zombies
        threads = [:]
        zombies = []
        pthread_mutex_unlock(&lock)
        for t in all { pthread_join(t, nil) }
        pthread_mutex_lock(&lock)
        results = [:]
        secrets = [:]
        pthread_mutex_unlock(&lock)
    }
}

extension IpamPool {
    /// A pool.import request of this many bytes or more is parsed and validated off the transaction thread.
    static let prepareBytes = 32 * 1024
    /// How long one step waits for a preparation before answering "continue" again (it holds up the store meanwhile).
    static let prepareWaitMs = 10

    /// pool.import without parsing the whole request on the transaction thread, or nil for the ordinary path: a
    /// large document starts (or waits for) its preparation; a step of a staged import reads only "name", "network"
    /// and "continue".
    func importFast(_ request: [UInt8]) throws -> [UInt8]? {
        guard let top = TopLevel.values(request, ["name", "network", "continue"]) else { return nil }
        guard let token = top["continue"], !token.isNull else {
            guard request.count >= Self.prepareBytes, let job = preparations.start(request) else { return nil }
            return preparing(job).bytes
        }
        if let n = top["network"]?.string, !n.isEmpty { network = n }
        guard let id = token["prepare"]?.int64 else {
            guard let name = top["name"]?.string else { return nil }  // the ordinary path says what is wrong
            let op = Op(host: host, network: networkLabel, parsed: parsedDefs)
            try op.sweep()
            return try finish(op, try importStep(op, name))
        }
        let secret = token["secret"]?.string ?? ""
        switch preparations.take(id, secret: secret, waitingUpTo: Self.prepareWaitMs) {
        case .pending: return preparing((id, secret)).bytes
        case .unknown:  // this instance never prepared it (berthd reloaded the plugin): prepare it again
            guard let again = preparations.start(request) else { return nil }
            return preparing(again).bytes
        case .done(let p):
            if let f = p.failure { throw f }
            guard let doc = p.doc else { return nil }
            if let n = doc["network"]?.string, !n.isEmpty { network = n }
            let op = Op(host: host, network: networkLabel, parsed: parsedDefs)
            try op.sweep()
            return try finish(op, try importPool(op, doc, prepared: p))
        }
    }

    private func preparing(_ job: (id: Int64, secret: String)) -> JV {
        ["continue": ["prepare": JV(job.id), "secret": .string(job.secret)], "preparing": true]
    }
}
