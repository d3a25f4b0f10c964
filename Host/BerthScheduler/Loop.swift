// The scheduler loop: a thread that runs passes (Scheduler.pass, each in one transaction) whenever something
// changed, and once a second for retries that wait on time; and the blocking passes the benchmark drives.
import BerthKinds
import BerthPlugins
import BerthStore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension WorkloadService {
    // MARK: the loop

    func startLoop() {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        guard !looping else { return }
        looping = true
        stopping = false
        loopDone = false
        Detached.run { [self] in loop() }
    }

    /// Stops the loop after its current pass (tests and the benchmark).
    public func stop() {
        pthread_mutex_lock(&mutex)
        stopping = true
        pthread_cond_signal(&cond)
        while looping && !loopDone { pthread_cond_wait(&cond, &mutex) }
        looping = false
        pthread_mutex_unlock(&mutex)
    }

    /// Whether this berthd runs scheduling passes: always on one host; in cluster mode while it holds the scheduling
    /// leadership (set by the cluster member, which marks the model for a reload when it takes over).
    public func setLeading(_ on: Bool) {
        pthread_mutex_lock(&mutex)
        if on && !leading { state.dirty = true }  // read on the executor, which reloads before the next pass anyway
        leading = on
        kicked = true
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
    }

    /// Wakes the loop from outside (cluster mode: another berthd changed workloads).
    public func wake() { kick() }

    /// Wakes the loop: something changed that may let instances be placed or torn down.
    func kick() {
        pthread_mutex_lock(&mutex)
        kicked = true
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&mutex)
    }

    func loop() {
        while true {
            pthread_mutex_lock(&mutex)
            if !kicked && !stopping {
                var ts = timespec()
                clock_gettime(CLOCK_REALTIME, &ts)
                ts.tv_sec += 1  // retries of instances that wait on time (backoff) need a tick
                pthread_cond_timedwait(&cond, &mutex, &ts)
            }
            kicked = false
            if stopping {
                loopDone = true
                pthread_cond_broadcast(&cond)
                pthread_mutex_unlock(&mutex)
                return
            }
            let leads = leading
            pthread_mutex_unlock(&mutex)
            // In cluster mode only the scheduling leader runs passes (ClusterMember); the others serve the API.
            guard leads else { continue }
            // Passes until there is nothing left to do right now.
            while true {
                let r = try? txSync { self.scheduler.pass(budget: 256) }
                guard let r, r.more else { break }
            }
        }
    }

    /// One scheduling pass in a transaction (the benchmark drives the scheduler with this).
    public func schedulePass(budget: Int = 256) throws -> (placed: Int, failed: Int, tornDown: Int, more: Bool) {
        let r = try txSync { self.scheduler.pass(budget: budget) }
        return (r.placed, r.failed, r.tornDown, r.more)
    }

    /// Runs passes until nothing is left to do right now; returns the number of placements.
    @discardableResult
    public func scheduleUntilIdle(budget: Int = 256) throws -> Int {
        var placed = 0
        while true {
            let r = try schedulePass(budget: budget)
            placed += r.placed
            if !r.more { return placed }
        }
    }

}
