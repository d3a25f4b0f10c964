// berth-plugin-runner's life: its options and limits, loading the plugin with the daemon's own Loader, and the loop
// that serves the daemon's frames on fd 3 (DESCRIBE, CREATE, CALL, COMPLETE, DESTROY) until the daemon goes.
import BerthPluginABI
import BerthPlugins

#if canImport(Glibc)
import Glibc
#endif

/// The whole of berth-plugin-runner: load one plugin with the same Loader, then serve its calls on fd 3.
enum PluginRunner {
    final class State {
        let ch: FrameChannel
        let outputLimit: Int
        var plugin: LoadedPlugin?
        var instance: UnsafeMutableRawPointer?
        var created = false
        var inCall = false
        var callThread = pthread_self()
        var services = berth_host_services()
        /// ABI 1.2: completion callbacks registered by the plugin, by the id the daemon knows them by.
        var completions: [UInt64: (commit: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?,
                                   rollback: (@convention(c) (UnsafeMutableRawPointer?) -> Void)?, arg: UnsafeMutableRawPointer?)] = [:]
        var nextCompletion: UInt64 = 1

        init(ch: FrameChannel, outputLimit: Int) {
            self.ch = ch
            self.outputLimit = outputLimit
        }

        /// Waits for the daemon's reply to a host-service request. The daemon gone means we are done.
        func awaitReply() -> [UInt8] {
            switch ch.receive(deadline: nil) {
            case .frame(.reply, let p): return p
            case .closed: exit(0)
            default: exit(70)
            }
        }

        var mayUseKV: Bool { inCall && pthread_equal(pthread_self(), callThread) != 0 }
    }

    nonisolated(unsafe) static var state: State!

    static func parseArgs(_ args: [String]) -> [String: String] {
        var o: [String: String] = [:]
        var i = 1
        while i < args.count {
            let a = args[i]
            if a.hasPrefix("--") {
                if a == "--allow-insecure-permissions" || a == "--dry-run" { o[a] = "1"; i += 1; continue }
                if i + 1 < args.count { o[a] = args[i + 1]; i += 2; continue }
            }
            i += 1
        }
        return o
    }

    static func setLimit(_ resource: Int32, _ value: UInt64, _ what: String) {
        var rl = rlimit(rlim_cur: rlim_t(value), rlim_max: rlim_t(value))
        if setrlimit(__rlimit_resource_t(UInt32(resource)), &rl) != 0 {
            let m = "berth-plugin-runner: cannot set \(what) to \(value): \(String(cString: strerror(errno)))\n"
            _ = m.withCString { write(2, $0, strlen($0)) }
        }
    }

    /// The runner's options (see `usage`), parsed; exits with the usage when a required one is missing.
    struct Options {
        let name: String, path: String, copyDir: String
        let raw: [String: String]
        subscript(_ k: String) -> String? { raw[k] }

        static let usage = "usage: berth-plugin-runner --name NAME --path FILE --copy-dir DIR [--sha256 HEX] [--memory-bytes N] [--open-files N]\n" +
            "  started by berthd for plugins with \"isolation\": \"process\"; serves the plugin ABI on fd 3\n"

        init(_ args: [String]) {
            raw = PluginRunner.parseArgs(args)
            guard let name = raw["--name"], let path = raw["--path"], let copyDir = raw["--copy-dir"] else {
                _ = Options.usage.withCString { write(2, $0, strlen($0)) }
                exit(2)
            }
            self.name = name
            self.path = path
            self.copyDir = copyDir
        }
    }

    static func main(_ args: [String]) -> Never {
        let o = Options(args)
        confine(o)
        let ch = FrameChannel(fd: 3)
        let st = State(ch: ch, outputLimit: o["--output-limit"].flatMap { Int($0) } ?? (16 << 20))
        state = st
        installServices(st)
        serve(st, o, loader: loader(o, ch))
    }

    /// Dies with the daemon, keeps nothing of the daemon's but fd 3, and applies the limits it was given.
    static func confine(_ o: Options) {
        // Die with the daemon, however it exits: SIGKILL when the parent goes, and exit on EOF in `serve`.
        typealias Prctl = @convention(c) (Int32, UInt, UInt, UInt, UInt) -> Int32
        if let sym = dlsym(nil, "prctl") { _ = unsafeBitCast(sym, to: Prctl.self)(1 /* PR_SET_PDEATHSIG */, UInt(SIGKILL), 0, 0, 0) }
        if let p = o["--parent"].flatMap({ pid_t($0) }), getppid() != p { exit(0) }
        signal(SIGPIPE, SIG_IGN)
        // Nothing of the daemon's but fd 3 (everything it opens is close-on-exec; this is belt and braces).
        typealias CloseRange = @convention(c) (UInt32, UInt32, Int32) -> Int32
        if let sym = dlsym(nil, "close_range") { _ = unsafeBitCast(sym, to: CloseRange.self)(4, UInt32.max, 0) }
        setLimit(Int32(RLIMIT_CORE.rawValue), 0, "RLIMIT_CORE")
        if let m = o["--memory-bytes"].flatMap({ UInt64($0) }) { setLimit(Int32(RLIMIT_AS.rawValue), m, "RLIMIT_AS") }
        if let f = o["--open-files"].flatMap({ UInt64($0) }) { setLimit(Int32(RLIMIT_NOFILE.rawValue), f, "RLIMIT_NOFILE") }
    }

    /// The daemon's Loader, its warnings sent to the daemon as log frames.
    static func loader(_ o: Options, _ ch: FrameChannel) -> Loader {
        let hostMinor = o["--host-minor"].flatMap { UInt16($0) } ?? UInt16(BERTH_ABI_MINOR)
        return Loader(copyDir: o.copyDir, hostMinor: hostMinor, warn: { msg in
            var w = WireWriter(.log)
            w.u8(UInt8(BERTH_LOG_WARN.rawValue))
            w.bytes.append(contentsOf: msg.utf8)
            ch.send(w.finish())
        })
    }

    /// Serves the daemon's frames until it closes the socket or destroys the instance.
    static func serve(_ st: State, _ o: Options, loader: Loader) -> Never {
        let err = UnsafeMutablePointer<CChar>.allocate(capacity: Int(BERTH_ERR_CAP))
        while true {
            switch st.ch.receive(deadline: nil) {
            case .closed, .timeout:
                exit(0)
            case .frame(.describe, _):
                describe(st, o, loader)
            case .frame(.create, let config):
                create(st, config, err)
            case .frame(.call, let payload):
                guard let p = st.plugin, st.created else { exit(70) }
                payload.withUnsafeBytes { b in serveCall(st, p, b, err) }
            case .frame(.complete, let payload):
                runCompletion(st, payload, err)
            case .frame(.destroy, _):
                if let p = st.plugin, st.created { p.d.pointee.destroy?(st.instance) }
                st.created = false
                sendResult(st, BERTH_OK, err, 0, nil)
                exit(0)
            case .frame:
                exit(70)
            }
        }
    }

    /// DESCRIBE: load the plugin (once) and answer with its description, or with the load error.
    static func describe(_ st: State, _ o: Options, _ loader: Loader) {
        var spec = PluginSpec(name: o.name, path: o.path)
        spec.sha256 = o["--sha256"]
        spec.allowInsecurePermissions = o["--allow-insecure-permissions"] != nil
        var w = WireWriter(.described)
        do {
            let p: LoadedPlugin
            if let loaded = st.plugin { p = loaded } else { p = try loader.load(spec, dryRun: o["--dry-run"] != nil); st.plugin = p }
            Described(p).encode(into: &w)
        } catch {
            w.u8(1)
            LoadErrorCodec.encode(error, plugin: o.name, file: o.path, into: &w)
        }
        st.ch.send(w.finish())
    }

    /// CREATE: the plugin's create() with the configuration, inside the call window (its kv_* reach the daemon).
    static func create(_ st: State, _ config: [UInt8], _ err: UnsafeMutablePointer<CChar>) {
        guard let p = st.plugin, !st.created else { exit(70) }
        err[0] = 0
        var handle: UnsafeMutableRawPointer?
        st.inCall = true
        st.callThread = pthread_self()
        let status = config.withUnsafeBufferPointer { b in
            withUnsafePointer(to: &st.services) { s in
                p.d.pointee.create!(s, UnsafeRawPointer(b.baseAddress)?.assumingMemoryBound(to: CChar.self), b.count, &handle, err, Int(BERTH_ERR_CAP))
            }
        }
        st.inCall = false
        if status == BERTH_OK { st.instance = handle; st.created = true }
        sendResult(st, status, err, 0, nil)
    }

    static func sendResult(_ st: State, _ status: berth_status, _ err: UnsafeMutablePointer<CChar>, _ flags: UInt8, _ output: UnsafeRawBufferPointer?) {
        var w = WireWriter(.result, capacity: 16 + (output?.count ?? 0))
        w.u32(status.rawValue)
        if status != BERTH_OK {
            err[Int(BERTH_ERR_CAP) - 1] = 0
            var msg = String(cString: err)
            if msg.isEmpty { msg = "(the plugin gave no message)" }
            w.string(msg)
        } else {
            w.string(nil)
        }
        w.u8(flags)
        if status == BERTH_OK, flags == 0, let output { w.raw(output) }
        st.ch.send(w.finish())
    }
}
