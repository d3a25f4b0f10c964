// The loader: from a plugin file to a live instance. Every failure is a distinct LoadError naming the plugin,
// the file and the cause; nothing here can take the daemon down for a bad file.
import BerthStore
import BerthPluginABI
import BerthWire
import Crypto
import Foundation

#if canImport(Glibc)
import Glibc
#endif

public struct LoadError: Error, CustomStringConvertible, Sendable {
    public enum Cause: Sendable, Equatable {
        case fileMissing
        case unreadable(String)
        case insecurePermissions(String)
        case checksumMismatch(expected: String, actual: String)
        case notSharedObject(String)
        case entryMissing
        case refused(hostMinor: Int)
        case abiMajorMismatch(plugin: Int, host: Int)
        case abiMinorTooNew(plugin: Int, host: Int)
        case structTooSmall(what: String, size: Int, minimum: Int)
        case badDescriptor(String)
        case halfFilled(kind: String, missing: [String])
        case configRejected([String])
        case createFailed(status: String, message: String)
        case copyFailed(String)
        /// The plugin declares a kind that cannot run under the site's isolation (a runtime under "process").
        case isolationUnsupported(kind: String, isolation: String)
    }
    public let plugin: String
    public let file: String
    public let cause: Cause

    public var reason: String {
        switch cause {
        case .fileMissing: return "file not found"
        case .unreadable(let e): return "cannot read the file: \(e)"
        case .insecurePermissions(let why): return "refusing an insecure plugin file: \(why) (fix the file, or set \"allowInsecurePermissions\": true for this plugin)"
        case let .checksumMismatch(e, a): return "sha256 mismatch: the site pins \(e) but the file is \(a)"
        case .notSharedObject(let e): return "not a loadable shared object: \(e)"
        case .entryMissing: return "entry symbol \(BERTH_PLUGIN_ENTRY_SYMBOL) not found (is it exported with C linkage?)"
        case .refused(let minor): return "berth_plugin_entry_v1 returned NULL: the plugin refuses this host (ABI \(BERTH_ABI_MAJOR).\(minor))"
        case let .abiMajorMismatch(p, h): return "ABI major mismatch: the plugin was built for ABI \(p).x, this host speaks \(h).x"
        case let .abiMinorTooNew(p, h): return "ABI minor too new: the plugin needs ABI 1.\(p), this host provides 1.\(h); upgrade berthd"
        case let .structTooSmall(what, size, minimum): return "\(what) struct_size \(size) is smaller than the ABI \(what == "runtime table" ? "1.3" : "1.0") minimum \(minimum)"
        case .badDescriptor(let why): return "invalid descriptor: \(why)"
        case let .halfFilled(kind, missing): return "\(kind) functions half-filled: missing \(missing.joined(separator: ", ")) (a kind's required functions are all or nothing)"
        case .configRejected(let errs): return "configuration rejected by the plugin's schema: \(errs.joined(separator: "; "))"
        case let .createFailed(status, message): return "create failed (\(status)): \(message)"
        case .copyFailed(let e): return "cannot make the content-addressed copy: \(e)"
        case let .isolationUnsupported(kind, isolation):
            return "a \(kind) plugin cannot run with \"isolation\": \"\(isolation)\" in this version of berth (its instances outlive the runner); set \"isolation\": \"in-process\" for this plugin"
        }
    }
    public var description: String { "plugin \"\(plugin)\" (\(file)): \(reason)" }
}

public struct PluginSpec: Sendable {
    public var name: String
    public var path: String
    public var enabled: Bool = true
    public var isolation: String = "in-process"
    public var sha256: String? = nil
    public var allowInsecurePermissions: Bool = false
    /// Limits of the plugin's runner under process isolation (RLIMIT_AS, RLIMIT_NOFILE); nil = inherited.
    public var memoryLimitBytes: Int? = nil
    public var openFilesLimit: Int? = nil
    public var config: JSON = .object([])
    public init(name: String, path: String, config: JSON = .object([])) {
        self.name = name
        self.path = path
        self.config = config
    }
    public var json: JSON {
        var o: JSON = ["name": .string(name), "path": .string(path), "enabled": .bool(enabled), "isolation": .string(isolation)]
        if let sha256 { o = o.setting("sha256", .string(sha256)) }
        if allowInsecurePermissions { o = o.setting("allowInsecurePermissions", true) }
        if memoryLimitBytes != nil || openFilesLimit != nil {
            var l: JSON = .object([])
            if let m = memoryLimitBytes { l = l.setting("memoryBytes", .number(Double(m))) }
            if let f = openFilesLimit { l = l.setting("openFiles", .number(Double(f))) }
            o = o.setting("limits", l)
        }
        return o.setting("config", config)
    }
}

public final class Loader: @unchecked Sendable {
    /// Where content-addressed copies live (<stateDir>/plugins).
    public let copyDir: String
    public let hostMinor: UInt16
    let warn: (String) -> Void

    public init(copyDir: String, hostMinor: UInt16 = UInt16(BERTH_ABI_MINOR), warn: @escaping (String) -> Void = { _ in }) {
        self.copyDir = copyDir
        self.hostMinor = hostMinor
        self.warn = warn
    }

    /// Reads, checks and dlopens a plugin file, and validates its descriptor. Does not create an instance.
    /// `dryRun`: check and open the file without making the content-addressed copy (berth-plugin-runner --dry-run).
    public func load(_ spec: PluginSpec, dryRun: Bool = false) throws -> LoadedPlugin {
        let fail = { (c: LoadError.Cause) in LoadError(plugin: spec.name, file: spec.path, cause: c) }
        var st = stat()
        guard stat(spec.path, &st) == 0 else {
            if errno == ENOENT { throw fail(.fileMissing) }
            throw fail(.unreadable(String(cString: strerror(errno))))
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw fail(.unreadable("not a regular file")) }
        // Permissions: the daemon executes this code; nobody else may have been able to change it, nor the
        // directories and symlinks that lead to it (PluginPath.swift).
        var problems: [String] = []
        if st.st_mode & S_IWGRP != 0 { problems.append("group-writable") }
        if st.st_mode & S_IWOTH != 0 { problems.append("world-writable") }
        if st.st_uid != 0 && st.st_uid != geteuid() { problems.append("owned by uid \(st.st_uid), not root or the daemon's user (uid \(geteuid()))") }
        problems += PluginPath.problems(spec.path)
        if !problems.isEmpty {
            let why = problems.joined(separator: ", ")
            if spec.allowInsecurePermissions {
                warn("plugin \"\(spec.name)\" (\(spec.path)): loading an insecure file because allowInsecurePermissions is set: \(why)")
            } else {
                throw fail(.insecurePermissions(why))
            }
        }
        // Only an ELF shared object is ever copied or opened: a text file, or any other root-readable file named
        // in a site, is refused before a byte of it lands in the copy directory.
        if let why = PluginPath.notSharedObject(spec.path) { throw fail(.notSharedObject("\(spec.path): \(why)")) }
        let data: [UInt8]
        do { data = try readFile(spec.path) } catch { throw fail(.unreadable("\(error)")) }
        let digest = SHA256.hash(data: data).map { String(format2: $0) }.joined()
        if let pin = spec.sha256?.lowercased(), pin != digest { throw fail(.checksumMismatch(expected: pin, actual: digest)) }

        // Content-addressed copy: replacing the original file can never change code the daemon is running.
        // A dry run (a runner staging a site that is only checked) opens the checked file itself and copies nothing.
        let copy = dryRun ? spec.path : "\(copyDir)/\(digest).so"
        if !dryRun && access(copy, R_OK) != 0 {
            do {
                try makeDirectories(copyDir)
                try writeFileAtomically(copy, data, mode: 0o555)
            } catch { throw fail(.copyFailed("\(error)")) }
        }

        guard let handle = dlopen(copy, RTLD_NOW | RTLD_LOCAL) else {
            let e = dlerror().map { String(cString: $0) } ?? "unknown dlopen error"
            throw fail(.notSharedObject(e.replacingOccurrences(of: copy, with: spec.path)))
        }
        // Never dlclose: Swift, Go and Rust runtimes cannot be unloaded.
        guard let sym = dlsym(handle, BERTH_PLUGIN_ENTRY_SYMBOL) else { throw fail(.entryMissing) }
        typealias Entry = @convention(c) (UInt16, UInt16) -> UnsafePointer<berth_plugin_descriptor>?
        let entry = unsafeBitCast(sym, to: Entry.self)
        guard let raw = entry(UInt16(BERTH_ABI_MAJOR), hostMinor) else { throw fail(.refused(hostMinor: Int(hostMinor))) }
        return try validate(raw, spec: spec, file: spec.path, copy: copy, digest: digest)
    }

    func validate(_ raw: UnsafePointer<berth_plugin_descriptor>, spec: PluginSpec, file: String, copy: String, digest: String) throws -> LoadedPlugin {
        let fail = { (c: LoadError.Cause) in LoadError(plugin: spec.name, file: file, cause: c) }
        let d = try validateDescriptor(raw, fail: fail)
        var schema: JSON? = nil
        if let s = d.config_schema {
            do { schema = try JSON.parse(String(cString: s)) } catch { throw fail(.badDescriptor("config_schema is not valid JSON: \(error)")) }
            let lint = Schema.lint(schema!)
            if !lint.isEmpty { throw fail(.badDescriptor("config_schema: \(lint.map { $0.description }.joined(separator: "; "))")) }
        }
        let kindSchema = try validateKindTables(d, spec: spec, fail: fail)
        return LoadedPlugin(file: file, copy: copy, sha256: digest, raw: raw, schema: schema, kindSchema: kindSchema)
    }

    /// The descriptor's own fields: ABI version, size, name, version, create/destroy, thread contract, kind bits.
    /// Returns a zero-padded copy of the descriptor.
    private func validateDescriptor(_ raw: UnsafePointer<berth_plugin_descriptor>,
                                    fail: (LoadError.Cause) -> LoadError) throws -> berth_plugin_descriptor {
        // Read the version fields first: they sit right after struct_size in every ABI 1.x descriptor.
        let size = Int(raw.pointee.struct_size)
        if size >= 8 {
            let major = Int(raw.pointee.abi_major)
            if major != Int(BERTH_ABI_MAJOR) { throw fail(.abiMajorMismatch(plugin: major, host: Int(BERTH_ABI_MAJOR))) }
            if Int(raw.pointee.abi_minor) > Int(hostMinor) { throw fail(.abiMinorTooNew(plugin: Int(raw.pointee.abi_minor), host: Int(hostMinor))) }
        }
        let minimum = v10Size(\berth_plugin_descriptor.call)
        if size < minimum { throw fail(.structTooSmall(what: "descriptor", size: size, minimum: minimum)) }
        // Read through a zero-padded copy: fields beyond the plugin's struct_size read as zero, never past its memory.
        let d = LoadedPlugin.safeCopy(raw, size).pointee
        guard let namePtr = d.name, !String(cString: namePtr).isEmpty else { throw fail(.badDescriptor("name is missing")) }
        let pname = String(cString: namePtr)
        if pname.utf8.count > 63 || !Pattern.matches("^[a-z0-9][a-z0-9-]*$", pname) {
            throw fail(.badDescriptor("name \"\(pname)\" must be 1-63 characters of [a-z0-9-]"))
        }
        if d.version == nil { throw fail(.badDescriptor("version is missing")) }
        if d.create == nil || d.destroy == nil {
            throw fail(.badDescriptor("create and destroy are required (missing \([d.create == nil ? "create" : nil, d.destroy == nil ? "destroy" : nil].compactMap { $0 }.joined(separator: ", ")))"))
        }
        if d.thread_contract > 1 { throw fail(.badDescriptor("unknown thread_contract \(d.thread_contract)")) }
        let known: UInt32 = 0x1F
        if d.kinds & ~known != 0 { throw fail(.badDescriptor("unknown kind bits 0x\(String(d.kinds & ~known, radix: 16))")) }
        return d
    }

    /// The kind tables the descriptor declares; returns the scheduler kind's schema when it has one.
    private func validateKindTables(_ d: berth_plugin_descriptor, spec: PluginSpec,
                                    fail: (LoadError.Cause) -> LoadError) throws -> JSON? {
        // Kinds: each declared kind has its table, of at least the 1.0 size, with its required group complete.
        func table<T>(_ kindBit: UInt32, _ p: UnsafePointer<T>?, _ kind: String, _ minSize: Int) throws -> UnsafePointer<T>? {
            let declared = d.kinds & kindBit != 0
            if declared && p == nil { throw fail(.badDescriptor("declares the \(kind) kind but its \(kind) table is NULL")) }
            if !declared && p != nil { throw fail(.badDescriptor("has a \(kind) table but does not declare the \(kind) kind")) }
            guard let p else { return nil }
            let sz = Int(p.withMemoryRebound(to: UInt32.self, capacity: 1) { $0.pointee })
            if sz < minSize { throw fail(.structTooSmall(what: "\(kind) table", size: sz, minimum: minSize)) }
            return p
        }
        func group(_ kind: String, _ fns: [(String, Bool)]) throws {
            let present = fns.filter { $0.1 }.count
            if present != fns.count {
                throw fail(.halfFilled(kind: kind, missing: fns.filter { !$0.1 }.map { $0.0 }))
            }
        }
        // A runtime's instances must outlive whatever process runs the plugin; the runner does not carry the runtime
        // table yet, so a runtime plugin runs in process only (sdk-docs/kinds/runtime.md).
        if d.kinds & UInt32(BERTH_KIND_RUNTIME) != 0 && spec.isolation == "process" {
            throw fail(.isolationUnsupported(kind: "runtime", isolation: spec.isolation))
        }
        var kindSchema: JSON? = nil
        if let n = try table(UInt32(BERTH_KIND_NETWORK), d.network, "network", v10Size(\berth_network_ops.admin)) {
            let o = LoadedPlugin.safeCopy(n, Int(n.pointee.struct_size)).pointee
            try group("network", [("add", o.add != nil), ("del", o.del != nil), ("check", o.check != nil), ("gc", o.gc != nil), ("status", o.status != nil)])
        }
        if let s = try table(UInt32(BERTH_KIND_STORAGE), d.storage, "storage", v10Size(\berth_storage_ops.validate_capabilities)) {
            let o = LoadedPlugin.safeCopy(s, Int(s.withMemoryRebound(to: UInt32.self, capacity: 1) { $0.pointee })).pointee
            try group("storage", [("create_volume", o.create_volume != nil), ("delete_volume", o.delete_volume != nil),
                                  ("node_publish", o.node_publish != nil), ("node_unpublish", o.node_unpublish != nil)])
            if o.controller_publish != nil || o.controller_unpublish != nil {
                try group("storage controller", [("controller_publish", o.controller_publish != nil), ("controller_unpublish", o.controller_unpublish != nil)])
            }
            if o.node_stage != nil || o.node_unstage != nil {
                try group("storage stage", [("node_stage", o.node_stage != nil), ("node_unstage", o.node_unstage != nil)])
            }
            if o.create_snapshot != nil || o.delete_snapshot != nil {
                try group("storage snapshot", [("create_snapshot", o.create_snapshot != nil), ("delete_snapshot", o.delete_snapshot != nil)])
            }
        }
        if let s = try table(UInt32(BERTH_KIND_SCHEDULER), d.scheduler, "scheduler", v10Size(\berth_scheduler_ops.bind)) {
            let o = LoadedPlugin.safeCopy(s, Int(s.withMemoryRebound(to: UInt32.self, capacity: 1) { $0.pointee })).pointee
            try group("scheduler", [("kind", o.kind != nil), ("filter", o.filter != nil), ("score", o.score != nil),
                                    ("reserve", o.reserve != nil), ("unreserve", o.unreserve != nil)])
            if let ks = o.kind_schema {
                do { kindSchema = try JSON.parse(String(cString: ks)) } catch { throw fail(.badDescriptor("kind_schema is not valid JSON: \(error)")) }
            }
        }
        if let s = try table(UInt32(BERTH_KIND_DISCOVERY), d.discovery, "discovery", v10Size(\berth_discovery_ops.resync)) {
            let o = LoadedPlugin.safeCopy(s, Int(s.withMemoryRebound(to: UInt32.self, capacity: 1) { $0.pointee })).pointee
            try group("discovery", [("events", o.events != nil), ("resync", o.resync != nil)])
        }
        // ABI 1.3: the kind first appeared in 1.3, so its smallest table is the 1.3 one (the five required functions).
        if let s = try table(UInt32(BERTH_KIND_RUNTIME), d.runtime, "runtime", v10Size(\berth_runtime_ops.remove)) {
            let o = LoadedPlugin.safeCopy(s, Int(s.withMemoryRebound(to: UInt32.self, capacity: 1) { $0.pointee })).pointee
            try group("runtime", [("start", o.start != nil), ("stop", o.stop != nil), ("state", o.state != nil),
                                  ("list", o.list != nil), ("remove", o.remove != nil)])
        }
        return kindSchema
    }

    /// Validates the configuration against the plugin's schema and creates an instance. Runs the plugin's
    /// create() inside a transaction on `executor` (when given), so it may read and initialise its namespace.
    public func instantiate(_ plugin: LoadedPlugin, spec: PluginSpec, executor: Executor?,
                            log: @escaping (berth_log_level, String) -> Void) throws -> PluginInstance {
        let fail = { (c: LoadError.Cause) in LoadError(plugin: spec.name, file: spec.path, cause: c) }
        guard case .object = spec.config else { throw fail(.configRejected(["(root): expected object, got \(spec.config.typeName)"])) }
        if let schema = plugin.configSchema {
            let errs = Schema.validate(spec.config, against: schema)
            if !errs.isEmpty { throw fail(.configRejected(errs.map { $0.description })) }
        }
        let ctx = PluginContext(name: spec.name, executor: executor, log: log)
        let inst = PluginInstance(plugin: plugin, name: spec.name, ctx: ctx)
        let config = spec.config.bytes
        let create = {
            var handle: UnsafeMutableRawPointer?
            do {
                try inst.invoke("create") { err, cap in
                    config.withUnsafeBufferPointer { b in
                        withUnsafePointer(to: &ctx.services) { services in
                            plugin.d.pointee.create!(services, UnsafeRawPointer(b.baseAddress)?.assumingMemoryBound(to: CChar.self), b.count, &handle, err, cap)
                        }
                    }
                }
            } catch let e as BerthError {
                throw fail(.createFailed(status: e.statusName, message: e.message))
            }
            inst.handle = handle
        }
        if let executor { try executor.runSync(create) } else { try create() }
        return inst
    }
}

/// The ABI 1.0 size of a struct: the end of its last 1.0 field (frozen; later minors only append).
func v10Size<T, F>(_ lastField: KeyPath<T, F>) -> Int {
    MemoryLayout<T>.offset(of: lastField)! + MemoryLayout<UnsafeRawPointer>.size
}

// MARK: - small file helpers (one home for the host)

public func readFile(_ path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw BerthError(.internal, "\(path): \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 { if errno == EINTR { continue }; throw BerthError(.internal, "\(path): \(String(cString: strerror(errno)))") }
        if n == 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return out
}

/// Writes to a temporary file, fsyncs and renames: readers see the old or the new content, never a mix.
public func writeFileAtomically(_ path: String, _ data: [UInt8], mode: mode_t = 0o644) throws {
    let tmp = "\(path).tmp.\(getpid()).\(monotonicNanos())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard fd >= 0 else { throw BerthError(.internal, "\(tmp): \(String(cString: strerror(errno)))") }
    var off = 0
    while off < data.count {
        let n = data.withUnsafeBytes { write(fd, $0.baseAddress! + off, data.count - off) }
        if n < 0 { if errno == EINTR { continue }; let e = errno; close(fd); unlink(tmp); throw BerthError(.internal, "\(tmp): \(String(cString: strerror(e)))") }
        off += n
    }
    fsync(fd)
    fchmod(fd, mode)
    close(fd)
    guard rename(tmp, path) == 0 else { let e = errno; unlink(tmp); throw BerthError(.internal, "rename to \(path): \(String(cString: strerror(e)))") }
}

public func makeDirectories(_ path: String, mode: mode_t = 0o755) throws {
    var current = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        current += "/" + part
        if mkdir(current, mode) != 0 && errno != EEXIST {
            throw BerthError(.internal, "mkdir \(current): \(String(cString: strerror(errno)))")
        }
    }
}

public func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }

extension String {
    init(format2 byte: UInt8) {
        let h = String(byte, radix: 16)
        self = h.count == 1 ? "0" + h : h
    }
}
