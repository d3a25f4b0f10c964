// The output side of discovery-dns: a thread of its own that renders the desired state into the hosts file and
// the file_sd file, debounced (a burst of changes is one write), atomically (temporary file, fsync, rename, so
// readers see the old or the new file, never a mix), idempotently (no write when the content is unchanged), and
// that tells dnsmasq to re-read its hosts files (SIGHUP to the pid in the pid file) after the hosts file changed.
// It runs outside every host call: a slow disk never holds the host's executor.

#if canImport(Glibc)
import Glibc
#endif

struct Rendered: Equatable {
    var hosts: [UInt8]
    var fileSd: [UInt8]
}

final class OutputWriter: @unchecked Sendable {
    let hostsFile: String?
    let fileSdFile: String?
    let pidFile: String?
    let debounceNanos: UInt64
    let maxDelayNanos: UInt64
    /// Renders the current desired state; nil while it is not known yet (no resync so far).
    let render: () -> Rendered?
    let log: (String, Bool) -> Void

    private var m = pthread_mutex_t()
    private var c = pthread_cond_t()
    private var thread = pthread_t()
    private var started = false
    private var stopping = false
    private var dirty = false
    private var firstDirty: UInt64 = 0
    private var lastDirty: UInt64 = 0
    private var retryAt: UInt64 = 0
    private var lastHosts: [UInt8]?
    private var lastFileSd: [UInt8]?
    // Statistics (under m).
    private(set) var writes = 0
    private(set) var unchanged = 0
    private(set) var signals = 0
    private(set) var failures = 0

    init(hostsFile: String?, fileSdFile: String?, pidFile: String?, debounceMs: Int,
         render: @escaping () -> Rendered?, log: @escaping (String, Bool) -> Void) {
        self.hostsFile = hostsFile
        self.fileSdFile = fileSdFile
        self.pidFile = pidFile
        debounceNanos = UInt64(debounceMs) * 1_000_000
        maxDelayNanos = max(UInt64(debounceMs) * 5_000_000, 1_000_000_000)
        self.render = render
        self.log = log
        pthread_mutex_init(&m, nil)
        pthread_cond_init(&c, nil)
    }

    var enabled: Bool { hostsFile != nil || fileSdFile != nil }

    func start() {
        guard enabled, !started else { return }
        started = true
        let arg = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { a in
            let w = Unmanaged<OutputWriter>.fromOpaque(a!).takeRetainedValue()
            w.loop()
            return nil
        }, arg)
    }

    /// Stops the thread after a last flush of pending changes.
    func stop() {
        guard started else { return }
        pthread_mutex_lock(&m)
        stopping = true
        pthread_cond_signal(&c)
        pthread_mutex_unlock(&m)
        pthread_join(thread, nil)
        started = false
    }

    func markDirty() {
        guard enabled else { return }
        let now = monotonic()
        pthread_mutex_lock(&m)
        if !dirty { firstDirty = now }
        dirty = true
        lastDirty = now
        pthread_cond_signal(&c)
        pthread_mutex_unlock(&m)
    }

    var stats: J {
        pthread_mutex_lock(&m)
        defer { pthread_mutex_unlock(&m) }
        return .object([("writes", .int(Int64(writes))), ("unchanged", .int(Int64(unchanged))), ("signals", .int(Int64(signals))),
                        ("failures", .int(Int64(failures))), ("pending", .bool(dirty))])
    }

    private func loop() {
        pthread_mutex_lock(&m)
        while true {
            if stopping {
                if dirty { dirty = false; pthread_mutex_unlock(&m); _ = flush(); pthread_mutex_lock(&m) }
                break
            }
            if !dirty { pthread_cond_wait(&c, &m); continue }
            let due = max(min(lastDirty + debounceNanos, firstDirty + maxDelayNanos), retryAt)
            let now = monotonic()
            if now < due {
                var ts = timespec()
                clock_gettime(CLOCK_REALTIME, &ts)
                let wake = UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec) + (due - now)
                ts.tv_sec = Int(wake / 1_000_000_000)
                ts.tv_nsec = Int(wake % 1_000_000_000)
                pthread_cond_timedwait(&c, &m, &ts)
                continue
            }
            dirty = false
            pthread_mutex_unlock(&m)
            let ok = flush()
            pthread_mutex_lock(&m)
            if !ok {
                // Try again in a second (keeps what changed meanwhile).
                failures += 1
                if !dirty { firstDirty = monotonic() }
                dirty = true
                retryAt = monotonic() + 1_000_000_000
            }
        }
        pthread_mutex_unlock(&m)
    }

    /// Renders and writes what changed. Returns false when a write failed.
    @discardableResult
    func flush() -> Bool {
        guard let r = render() else { return true }
        var ok = true
        var hostsChanged = false
        if let path = hostsFile {
            switch writeIfChanged(path, r.hosts, &lastHosts) {
            case .some(true): hostsChanged = true
            case .some(false): break
            case .none: ok = false
            }
        }
        if let path = fileSdFile, writeIfChanged(path, r.fileSd, &lastFileSd) == nil { ok = false }
        if hostsChanged { signalDNS() }
        return ok
    }

    /// true: written; false: unchanged; nil: failed.
    private func writeIfChanged(_ path: String, _ content: [UInt8], _ cache: inout [UInt8]?) -> Bool? {
        if cache == nil { cache = readFile(path) }  // first time: compare with what is on disk
        if cache == content {
            pthread_mutex_lock(&m); unchanged += 1; pthread_mutex_unlock(&m)
            return false
        }
        if let err = writeAtomically(path, content) {
            log("cannot write \(path): \(err)", true)
            return nil
        }
        cache = content
        pthread_mutex_lock(&m); writes += 1; pthread_mutex_unlock(&m)
        return true
    }

    private func signalDNS() {
        guard let pidFile else { return }
        guard let text = readFile(pidFile).map({ String(decoding: $0, as: UTF8.self) }) else {
            log("pid file \(pidFile) cannot be read; dnsmasq was not told to reload", true)
            return
        }
        let digits = text.unicodeScalars.drop { $0 == " " || $0 == "\n" }.prefix { $0 >= "0" && $0 <= "9" }
        guard let pid = Int32(String(String.UnicodeScalarView(digits))), pid > 1 else {
            log("pid file \(pidFile) holds no pid (\(text.prefix(20))); dnsmasq was not told to reload", true)
            return
        }
        if kill(pid, SIGHUP) != 0 {
            log("SIGHUP to pid \(pid) (from \(pidFile)) failed: \(String(cString: strerror(errno)))", true)
            return
        }
        pthread_mutex_lock(&m); signals += 1; pthread_mutex_unlock(&m)
    }
}

func monotonic() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

func readFile(_ path: String) -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue }; return nil }
        if n == 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return out
}

/// Temporary file in the same directory, fsync, rename over the target, fsync the directory. Returns an error
/// message, or nil on success.
func writeAtomically(_ path: String, _ data: [UInt8]) -> String? {
    let tmp = "\(path).tmp.\(getpid()).\(monotonic())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { return "\(tmp): \(String(cString: strerror(errno)))" }
    var off = 0
    while off < data.count {
        let n = data.withUnsafeBytes { write(fd, $0.baseAddress! + off, data.count - off) }
        if n < 0 {
            if errno == EINTR { continue }
            let e = errno
            close(fd)
            unlink(tmp)
            return "\(tmp): \(String(cString: strerror(e)))"
        }
        off += n
    }
    if fsync(fd) != 0 {
        let e = errno
        close(fd)
        unlink(tmp)
        return "fsync \(tmp): \(String(cString: strerror(e)))"
    }
    fchmod(fd, 0o644)
    close(fd)
    if rename(tmp, path) != 0 {
        let e = errno
        unlink(tmp)
        return "rename \(tmp) -> \(path): \(String(cString: strerror(e)))"
    }
    var dir = path
    if let slash = dir.lastIndex(of: "/") { dir = slash == dir.startIndex ? "/" : String(dir[..<slash]) } else { dir = "." }
    let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if dfd >= 0 { fsync(dfd); close(dfd) }
    return nil
}
