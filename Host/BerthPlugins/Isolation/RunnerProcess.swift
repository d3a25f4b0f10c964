// The daemon's side of a runner process: spawning berth-plugin-runner (from one long-lived thread, with its end
// of the socket pair on fd 3), killing and reaping it, and where its executable lives.
import BerthPluginABI
import BerthStore

#if canImport(Glibc)
import Glibc
#endif

/// posix_spawn from one long-lived thread. PR_SET_PDEATHSIG fires when the *thread* that created the child exits,
/// not the process; spawning from a pool or detached thread would kill runners when that thread retires.
final class Spawner: @unchecked Sendable {
    static let shared = Spawner()
    private var m = pthread_mutex_t()
    private var c = pthread_cond_t()
    private final class Job { let body: () -> Void; var done = false; init(_ b: @escaping () -> Void) { body = b } }
    private var jobs: [Job] = []

    private init() {
        pthread_mutex_init(&m, nil)
        pthread_cond_init(&c, nil)
        var t = pthread_t()
        pthread_create(&t, nil, { arg in
            Unmanaged<Spawner>.fromOpaque(arg!).takeUnretainedValue().loop()
            return nil
        }, Unmanaged.passRetained(self).toOpaque())
        pthread_detach(t)
    }

    private func loop() {
        while true {
            pthread_mutex_lock(&m)
            while jobs.isEmpty { pthread_cond_wait(&c, &m) }
            let j = jobs.removeFirst()
            pthread_mutex_unlock(&m)
            j.body()
            pthread_mutex_lock(&m)
            j.done = true
            pthread_cond_broadcast(&c)
            pthread_mutex_unlock(&m)
        }
    }

    func run(_ body: @escaping () -> Void) {
        let j = Job(body)
        pthread_mutex_lock(&m)
        jobs.append(j)
        pthread_cond_broadcast(&c)
        while !j.done { pthread_cond_wait(&c, &m) }
        pthread_mutex_unlock(&m)
    }
}

func signalName(_ s: Int32) -> String {
    let names: [Int32: String] = [
        SIGSEGV: "SIGSEGV", SIGABRT: "SIGABRT", SIGBUS: "SIGBUS", SIGILL: "SIGILL", SIGFPE: "SIGFPE", SIGKILL: "SIGKILL",
        SIGTERM: "SIGTERM", SIGTRAP: "SIGTRAP", SIGSYS: "SIGSYS", SIGXCPU: "SIGXCPU", SIGXFSZ: "SIGXFSZ", SIGINT: "SIGINT",
        SIGQUIT: "SIGQUIT", SIGHUP: "SIGHUP", SIGPIPE: "SIGPIPE", SIGUSR1: "SIGUSR1", SIGUSR2: "SIGUSR2", SIGALRM: "SIGALRM",
    ]
    return names[s] ?? "signal \(s)"
}

/// A running berth-plugin-runner: its pid and the daemon's end of the socket pair.
final class RunnerProcess {
    let pid: pid_t
    let channel: FrameChannel
    private var reaped = false

    init(pid: pid_t, fd: Int32) {
        self.pid = pid
        channel = FrameChannel(fd: fd)
    }

    static func spawn(_ path: String, _ args: [String]) throws -> RunnerProcess {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw IsolationError(description: "socketpair: \(String(cString: strerror(errno)))")
        }
        var child = fds[1]
        if child == 3 {
            // dup2(3, 3) would leave FD_CLOEXEC set: move it out of the way first.
            child = fcntl(3, F_DUPFD_CLOEXEC, 10)
            Glibc.close(3)
        }
        var pid: pid_t = 0
        var rc: Int32 = 0
        let argv = [path] + args
        // The Swift runtime's crash backtracer would spend about half a second symbolicating a plugin's crash
        // (and print pages to the daemon's stderr) before the runner dies: off unless the operator asks for it.
        var env: [String] = []
        var i = 0
        while let e = environ[i] { env.append(String(cString: e)); i += 1 }
        if !env.contains(where: { $0.hasPrefix("SWIFT_BACKTRACE=") }) { env.append("SWIFT_BACKTRACE=enable=no") }
        Spawner.shared.run {
            var fa = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&fa)
            posix_spawn_file_actions_adddup2(&fa, child, 3)
            var attr = posix_spawnattr_t()
            posix_spawnattr_init(&attr)
            var mask = sigset_t()
            sigemptyset(&mask)
            posix_spawnattr_setsigmask(&attr, &mask)
            var dflt = sigset_t()
            sigemptyset(&dflt)
            for s in [SIGPIPE, SIGCHLD, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2] { sigaddset(&dflt, s) }
            posix_spawnattr_setsigdefault(&attr, &dflt)
            // Own process group: a ^C on the daemon's terminal does not kill runners under calls in flight;
            // they still die with the daemon (EOF, and PR_SET_PDEATHSIG).
            posix_spawnattr_setpgroup(&attr, 0)
            posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
            let cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
            let cenv: [UnsafeMutablePointer<CChar>?] = env.map { strdup($0) } + [nil]
            rc = cargs.withUnsafeBufferPointer { a in cenv.withUnsafeBufferPointer { e in posix_spawn(&pid, path, &fa, &attr, a.baseAddress!, e.baseAddress!) } }
            for a in cargs + cenv { free(a) }
            posix_spawn_file_actions_destroy(&fa)
            posix_spawnattr_destroy(&attr)
        }
        Glibc.close(child)
        guard rc == 0 else {
            Glibc.close(fds[0])
            throw IsolationError(description: "cannot start the plugin runner \(path): \(String(cString: strerror(rc)))")
        }
        return RunnerProcess(pid: pid, fd: fds[0])
    }

    func kill9() {
        if !reaped { kill(pid, SIGKILL) }
    }

    /// Waits for the runner to exit and returns its wait status. A runner that closed its socket but lingers is
    /// given `grace` nanoseconds, then killed.
    func reap(grace: UInt64 = 1_000_000_000) -> Int32 {
        channel.close()
        guard !reaped else { return 0 }
        var st: Int32 = 0
        let until = monotonicNanos() + grace
        while true {
            let r = waitpid(pid, &st, WNOHANG)
            if r == pid { break }
            if r < 0 && errno != EINTR { st = 0; break }
            if monotonicNanos() > until {
                kill(pid, SIGKILL)
                while waitpid(pid, &st, 0) < 0 && errno == EINTR {}
                break
            }
            usleep(1000)
        }
        reaped = true
        return st
    }

    deinit {
        if !reaped {
            kill(pid, SIGKILL)
            _ = reap()
        }
    }
}

/// Where berth-plugin-runner lives: $BERTH_PLUGIN_RUNNER, else next to the running executable.
public var pluginRunnerPath: String {
    if let p = getenv("BERTH_PLUGIN_RUNNER"), p.pointee != 0 { return String(cString: p) }
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buf, buf.count - 1)
    var exe = n > 0 ? String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    if let slash = exe.lastIndex(of: "/") { exe = String(exe[..<slash]) } else { exe = "." }
    return exe + "/berth-plugin-runner"
}

/// A small pthread mutex wrapper (Foundation-free).
final class PthreadLock: @unchecked Sendable {
    private var m = pthread_mutex_t()
    init() { pthread_mutex_init(&m, nil) }
    func lock() { pthread_mutex_lock(&m) }
    func unlock() { pthread_mutex_unlock(&m) }
    func with<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }
}
