// The executor: one thread owns the store's connection and runs every state-changing operation as its own
// transaction. Operations that arrive together share one SQLite commit (group commit), each inside its own
// savepoint, so a failing operation rolls back alone and a successful one is acknowledged only after the
// commit that holds it has returned — and, with store.sync "full", only after that commit is on the disk: a
// second thread (the syncer) fsyncs the log behind the executor and answers the callers of every batch the
// fsync covered, while the executor already runs the next batch. Nobody outside learns of a commit (answers,
// event watchers) before it is durable.
import BerthWire
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

public final class Executor: @unchecked Sendable {
    /// The engine every transaction runs on (SQLite on one host; etcd for `berth plugin check --store etcd://`).
    public let store: any StateStore
    private var queue: [Job] = []
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var thread = pthread_t()
    private var stopping = false
    private var running = false
    /// Called (off the executor thread's lock) after each commit that appended events.
    public var onCommit: (@Sendable (Int64) -> Void)?
    /// Largest number of operations in one commit.
    public var maxBatch = 512
    private var eventsAppended = false
    private var lastRev: Int64 = 0
    public private(set) var commits: UInt64 = 0
    public private(set) var operations: UInt64 = 0
    /// When the batch in progress started (monotonic ns), 0 while idle: read by the stall watchdog from any thread.
    let busySince = Atomic<UInt64>(0)
    /// The plugin call in progress on the executor thread (plugin, operation), for the stall watchdog.
    private var callLock = pthread_mutex_t()
    private var call: (plugin: String, operation: String)?

    /// Noted by PluginInstance around every call it makes on this thread (nil when the call returns). On the hot
    /// path: it only stores the two names; the watchdog formats them when it needs them.
    package func noteCall(_ c: (plugin: String, operation: String)?) {
        pthread_mutex_lock(&callLock)
        call = c
        pthread_mutex_unlock(&callLock)
    }

    /// How long the executor has been inside its current batch (nil while idle), and the plugin call it is in.
    public var busy: (seconds: Double, call: String?)? {
        let t0 = busySince.load(ordering: .relaxed)
        guard t0 != 0 else { return nil }
        pthread_mutex_lock(&callLock)
        let c = call
        pthread_mutex_unlock(&callLock)
        let now = monotonicNanos()
        return (now > t0 ? Double(now - t0) / 1e9 : 0, c.map { "\($0.plugin).\($0.operation)" })
    }

    struct Job {
        let work: () throws -> Void
        let complete: (Error?) -> Void
    }

    /// Committed batches waiting for the syncer: their callers, their results, whether they appended events.
    /// `completions`: the plugins' after_commit callbacks of the batch, run once it is on the disk.
    private struct Synced { let jobs: [Job]; let errors: [Error?]; let events: Bool; let rev: Int64; let completions: Completions }
    private var syncQueue: [Synced] = []
    private var syncMutex = pthread_mutex_t()
    private var syncCond = pthread_cond_t()
    private var syncThread = pthread_t()
    private var syncStopping = false
    /// fsyncs of the log made by the syncer (each covers one or more batches).
    public private(set) var syncs: UInt64 = 0
    /// Set when an fsync of the log failed (store.sync "full"): the store then takes no more changes. After a failed
    /// fsync the kernel may have dropped the log's unwritten pages and report the next fsync as a success, so a later
    /// commit could be acknowledged and still vanish in a crash with the ones before it. Restarting berthd recovers
    /// every commit that reached the disk. Read by /metrics from any thread.
    let stopped = Mutex<String?>(nil)
    public var stoppedReason: String? { stopped.withLock { $0 } }

    /// Commits an optimistic engine refused for a conflict (each re-ran its batch from the start).
    public private(set) var conflicts: UInt64 = 0
    /// How often a batch whose commit conflicts is run again before its operations fail with ABORTED.
    public let maxConflictRetries: Int

    public init(store: any StateStore, maxConflictRetries: Int = 8) {
        self.store = store
        self.maxConflictRetries = maxConflictRetries
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
        pthread_mutex_init(&callLock, nil)
        pthread_mutex_init(&syncMutex, nil)
        pthread_cond_init(&syncCond, nil)
    }

    public func start() {
        guard !running else { return }
        running = true
        Executor.startThread(&thread) { self.loop() }
        if store.durableCommits { Executor.startThread(&syncThread) { self.syncLoop() } }
    }

    /// A pthread running `body` (which keeps what it captures alive until it returns).
    private static func startThread(_ t: inout pthread_t, _ body: @escaping () -> Void) {
        final class Start { let body: () -> Void; init(_ b: @escaping () -> Void) { body = b } }
        let start = Unmanaged.passRetained(Start(body))
        pthread_create(&t, nil, { arg in
            Unmanaged<Start>.fromOpaque(arg!).takeRetainedValue().body()
            return nil
        }, start.toOpaque())
    }

    /// Stops after the queued operations are done.
    public func stop() {
        guard running else { return }
        pthread_mutex_lock(&mutex)
        stopping = true
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
        pthread_join(thread, nil)
        if store.durableCommits {
            pthread_mutex_lock(&syncMutex)
            syncStopping = true
            pthread_cond_signal(&syncCond)
            pthread_mutex_unlock(&syncMutex)
            pthread_join(syncThread, nil)
        }
        running = false
    }

    public var isExecutorThread: Bool { running && pthread_equal(pthread_self(), thread) != 0 }

    /// Records that the current operation appended an event (so watchers get woken after the commit).
    package func noteEvent(_ rev: Int64) {
        eventsAppended = true
        lastRev = max(lastRev, rev)
    }

    private func enqueue(_ job: Job) {
        pthread_mutex_lock(&mutex)
        queue.append(job)
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
    }

    /// Queues `work` to run in its own savepoint of the next batch; `complete` gets its error, or nil, once the batch
    /// has committed (and, with store.sync "full", is on the disk). For callers that answer others from `complete`.
    func submit(_ work: @escaping () throws -> Void, complete: @escaping (Error?) -> Void) {
        enqueue(Job(work: work, complete: complete))
    }

    /// Runs `body` in its own transaction on the executor thread and returns its result once committed.
    public func run<T>(_ body: @escaping () throws -> T) async throws -> T {
        if isExecutorThread { return try body() }
        return try await withCheckedThrowingContinuation { (cont: CheckedContinuation<T, Error>) in
            var result: T?
            enqueue(Job(work: { result = try body() }, complete: { err in
                if let err { cont.resume(throwing: err) } else { cont.resume(returning: result!) }
            }))
        }
    }

    /// The blocking form, for threads that are not part of Swift concurrency (CLI, tests, benchmarks).
    public func runSync<T>(_ body: @escaping () throws -> T) throws -> T {
        if isExecutorThread { return try body() }
        var sem = sem_t()
        sem_init(&sem, 0, 0)
        defer { sem_destroy(&sem) }
        var result: Result<T, Error>?
        var value: T?
        enqueue(Job(work: { value = try body() }, complete: { err in
            result = err.map { .failure($0) } ?? .success(value!)
            sem_post(&sem)
        }))
        while sem_wait(&sem) != 0 {}
        return try result!.get()
    }

    /// How long the queue must stay empty before the executor checkpoints the store's log early (Store.checkpoint).
    /// Clients that wait for their answer before they ask again leave the queue empty for moments between batches;
    /// a checkpoint there (and its fsyncs) would sit in their path: it cost single ADDs 18% of their rate.
    static let idleBeforeCheckpointNanos: Int = 50_000_000

    private func loop() {
        while true {
            pthread_mutex_lock(&mutex)
            while queue.isEmpty && !stopping {
                guard store.idleWorkDue else { pthread_cond_wait(&cond, &mutex); continue }
                var deadline = timespec()
                clock_gettime(CLOCK_REALTIME, &deadline)
                let ns = deadline.tv_nsec + Executor.idleBeforeCheckpointNanos
                deadline.tv_sec += ns / 1_000_000_000
                deadline.tv_nsec = ns % 1_000_000_000
                if pthread_cond_timedwait(&cond, &mutex, &deadline) == ETIMEDOUT && queue.isEmpty && !stopping {
                    pthread_mutex_unlock(&mutex)
                    store.doIdleWork()
                    pthread_mutex_lock(&mutex)
                }
            }
            if queue.isEmpty && stopping { pthread_mutex_unlock(&mutex); return }
            let n = min(queue.count, maxBatch)
            let batch = Array(queue[0..<n])
            queue.removeFirst(n)
            pthread_mutex_unlock(&mutex)
            let deferred = runBatch(batch)
            if !deferred.isEmpty {
                pthread_mutex_lock(&mutex)
                queue.insert(contentsOf: deferred, at: 0)
                pthread_mutex_unlock(&mutex)
            }
        }
    }

    /// Thrown inside an operation's savepoint when the transaction no longer fits in one commit of the engine: the
    /// operation's writes are rolled back with the savepoint and it runs again in the next commit (an optimistic
    /// engine also forgets what it read there: EtcdStore.savepoint).
    struct DoesNotFit: Error {}

    /// Runs a batch in one transaction; returns the jobs left for the next one (the engine's commit could not hold
    /// them: etcd's --max-txn-ops and --max-request-bytes), in order. A job that alone does not fit fails at commit.
    private func runBatch(_ full: [Job]) -> [Job] {
        var batch = full
        busySince.store(monotonicNanos(), ordering: .relaxed)
        defer { busySince.store(0, ordering: .relaxed) }
        var errors = [Error?](repeating: nil, count: batch.count)
        eventsAppended = false
        if let why = stoppedReason {
            let e = BerthError(.internal, "the state store takes no more changes: \(why). Restart berthd; it recovers every change that reached the disk")
            for j in batch { j.complete(e) }
            return []
        }
        var completions = Completions()
        for attempt in 0... {
            errors = [Error?](repeating: nil, count: batch.count)
            eventsAppended = false
            do {
                try store.begin()
            } catch {
                for j in batch { j.complete(error) }
                return []
            }
            for (i, job) in batch.enumerated() {
                do {
                    try store.savepoint("op") {
                        try job.work()
                        // The scheduling leader's operation (fenced) commits alone, so that no other operation fails
                        // with it when this berthd's term has ended: here it goes to the next commit, where it is first.
                        if i > 0 && (!store.fitsOneCommit || store.transactionFenced) { throw DoesNotFit() }
                    }
                } catch is DoesNotFit {
                    batch = Array(batch[..<i])
                    errors = Array(errors[..<i])
                    break
                } catch { errors[i] = error }
                if i == 0 && batch.count > 1 && store.transactionFenced {  // fenced and first: the commit ends after it
                    batch = [batch[0]]
                    errors = [errors[0]]
                    break
                }
            }
            completions = store.completions.take()
            do {
                try store.commit()
                if eventsAppended, let r = store.committedEventRevision { lastRev = max(lastRev, r) }
                break
            } catch {
                store.rollback()
                // An engine that cannot tell whether its commit was applied (etcd out of reach after the Txn left, or a
                // "request timed out" answer): the caller hears UNAVAILABLE with the outcome unknown, not "nothing was
                // saved", and neither completion runs (as for a commit whose fsync failed).
                if let b = error as? BerthError, b.status == .unavailable {
                    let e = BerthError(.unavailable, "the commit's outcome is unknown (\(b.message)): it may have been applied; read the state, or ask again (an attachment ADD is idempotent)")
                    for j in batch { j.complete(e) }
                    return Array(full[batch.count...])
                }
                completions.rollBack()
                // An optimistic engine found that something this batch read changed meanwhile: nothing was applied, and
                // the operations run again from the start, on what is there now (DESIGN.md, "The store").
                if let b = error as? BerthError, b.status == .aborted {
                    conflicts += 1
                    if attempt < maxConflictRetries { continue }
                    let e = BerthError(.aborted, "the change conflicted with concurrent changes \(attempt + 1) times and was not made; retry it")
                    for j in batch { j.complete(e) }
                    return Array(full[batch.count...])
                }
                // A transaction over the engine's limits names the limit: the caller can split the work.
                // So does a commit refused because this berthd no longer leads (a fenced transaction, cluster mode).
                let passed: [BerthStatus] = [.resourceExhausted, .failedPrecondition]
                let e = (error as? BerthError).flatMap { passed.contains($0.status) ? $0 : nil }
                    ?? BerthError(.internal, "commit failed, nothing was saved: \(error)")
                for j in batch { j.complete(e) }
                return Array(full[batch.count...])
            }
        }
        let rest = Array(full[batch.count...])
        commits += 1
        operations += UInt64(batch.count)
        if store.durableCommits {
            pthread_mutex_lock(&syncMutex)
            syncQueue.append(Synced(jobs: batch, errors: errors, events: eventsAppended, rev: lastRev, completions: completions))
            pthread_cond_signal(&syncCond)
            pthread_mutex_unlock(&syncMutex)
            return rest
        }
        completions.commit()
        for (i, j) in batch.enumerated() { j.complete(errors[i]) }
        if eventsAppended, let cb = onCommit { cb(lastRev) }
        return rest
    }

    /// The syncer: takes every batch committed so far, makes them durable with one fsync of the log, then answers
    /// their callers and wakes event watchers. A batch that committed while the last fsync ran waits for the next.
    private func syncLoop() {
        while true {
            pthread_mutex_lock(&syncMutex)
            while syncQueue.isEmpty && !syncStopping { pthread_cond_wait(&syncCond, &syncMutex) }
            if syncQueue.isEmpty && syncStopping { pthread_mutex_unlock(&syncMutex); return }
            let done = syncQueue
            syncQueue.removeAll(keepingCapacity: true)
            pthread_mutex_unlock(&syncMutex)
            let failure = store.syncLog()
            syncs += 1
            // A failed fsync: the commits may not be on the disk, so nobody is told they succeeded; and once stopped,
            // no batch synced from here on is acknowledged either, even when its fsync returned success.
            if let failure { stopped.withLock { if $0 == nil { $0 = "an fsync of its log failed (\(failure))" } } }
            let e = stoppedReason.map {
                BerthError(.internal, "the commit could not be made durable: \($0); it may be lost if the machine fails. The state store takes no more changes: restart berthd")
            }
            var events = false, rev: Int64 = 0
            for b in done {
                // Durable: the plugins may now act on it. Not durable: the outcome is unknown, so neither callback runs.
                if e == nil { b.completions.commit() }
                for (i, j) in b.jobs.enumerated() { j.complete(e ?? b.errors[i]) }
                if b.events { events = true; rev = max(rev, b.rev) }
            }
            if events, let cb = onCommit { cb(rev) }
        }
    }
}
