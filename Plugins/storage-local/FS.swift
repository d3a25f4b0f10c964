// Filesystem helpers for storage-local, on the C library only: directory trees (copy, remove, size), files
// (preallocate, copy), bind mounts (mount(2) with MS_BIND, umount2) and /proc/self/mountinfo.
import BerthPluginKit

#if canImport(Glibc)
import Glibc
#endif

enum FS {
    static let MS_RDONLY: UInt = 1
    static let MS_REMOUNT: UInt = 32
    static let MS_BIND: UInt = 4096

    static var errnoText: String { String(cString: strerror(errno)) }

    static func lstatOf(_ path: String) -> stat? {
        var st = stat()
        return lstat(path, &st) == 0 ? st : nil
    }

    static func statOf(_ path: String) -> stat? {
        var st = stat()
        return stat(path, &st) == 0 ? st : nil
    }

    static func isDir(_ st: stat) -> Bool { st.st_mode & S_IFMT == S_IFDIR }
    static func isReg(_ st: stat) -> Bool { st.st_mode & S_IFMT == S_IFREG }
    static func isLink(_ st: stat) -> Bool { st.st_mode & S_IFMT == S_IFLNK }

    static func exists(_ path: String) -> Bool { lstatOf(path) != nil }

    /// mkdir -p; existing directories are fine.
    static func makeDirs(_ path: String, mode: mode_t = 0o750) throws {
        if let st = statOf(path) {
            if isDir(st) { return }
            throw PluginError(.failedPrecondition, "\(path) exists and is not a directory")
        }
        let parent = dirname(path)
        if parent != path, !parent.isEmpty { try makeDirs(parent, mode: mode) }
        if mkdir(path, mode) != 0 && errno != EEXIST {
            throw PluginError(.internal, "mkdir \(path): \(errnoText)")
        }
    }

    /// `path` (absolute, normalised) with the symlinks of its existing part resolved: realpath of its longest
    /// existing prefix, the rest appended. nil when an existing component cannot be resolved (a dangling symlink,
    /// a loop, a directory that cannot be searched): a mkdir or mount there would follow it somewhere unknown.
    static func resolve(_ path: String) -> String? {
        var head = path
        var rest: [String] = []
        while true {
            if let r = realpath(head, nil) {
                defer { free(r) }
                let base = String(cString: r)
                if rest.isEmpty { return base }
                return (base == "/" ? "" : base) + "/" + rest.reversed().joined(separator: "/")
            }
            if errno != ENOENT || lstatOf(head) != nil { return nil }
            guard head != "/", let i = head.lastIndex(of: "/") else { return nil }
            rest.append(String(head[head.index(after: i)...]))
            head = dirname(head)
        }
    }

    static func dirname(_ path: String) -> String {
        guard let i = path.lastIndex(of: "/") else { return "." }
        if i == path.startIndex { return "/" }
        return String(path[path.startIndex..<i])
    }

    /// The names in a directory (without . and ..).
    static func list(_ path: String) throws -> [String] {
        guard let d = opendir(path) else { throw PluginError(.internal, "opendir \(path): \(errnoText)") }
        defer { closedir(d) }
        var out: [String] = []
        while let e = readdir(d) {
            let name = withUnsafePointer(to: &e.pointee.d_name) { String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)) }
            if name == "." || name == ".." { continue }
            out.append(name)
        }
        return out
    }

    /// Removes a file or a directory tree. Never follows symlinks and never crosses into another mount: a tree
    /// with something mounted inside is refused (unmount it first) rather than emptied through the mount.
    static func removeTree(_ path: String) throws {
        guard let st = lstatOf(path) else { return }
        try removeTree(path, st, device: st.st_dev)
    }

    private static func removeTree(_ path: String, _ st: stat, device: dev_t) throws {
        guard st.st_dev == device else {
            throw PluginError(.failedPrecondition, "\(path) is on another filesystem (a mount inside the volume?); unmount it first")
        }
        if isDir(st) {
            for name in try list(path) {
                let p = path + "/" + name
                if let cst = lstatOf(p) { try removeTree(p, cst, device: device) }
            }
            if rmdir(path) != 0 && errno != ENOENT { throw PluginError(.internal, "rmdir \(path): \(errnoText)") }
        } else if unlink(path) != 0 && errno != ENOENT {
            throw PluginError(.internal, "unlink \(path): \(errnoText)")
        }
    }

    /// Apparent size of a tree: regular files and symlinks.
    static func treeSize(_ path: String) -> Int64 {
        guard let st = lstatOf(path) else { return 0 }
        if isDir(st) {
            return ((try? list(path)) ?? []).reduce(Int64(0)) { $0 + treeSize(path + "/" + $1) }
        }
        return Int64(st.st_size)
    }

    /// Copies a tree: directories, regular files and symlinks, with modes and owners. Special files are skipped.
    static func copyTree(_ src: String, _ dst: String) throws {
        guard let st = lstatOf(src) else { throw PluginError(.notFound, "\(src) does not exist") }
        if isDir(st) {
            if mkdir(dst, st.st_mode & 0o7777) != 0 && errno != EEXIST { throw PluginError(.internal, "mkdir \(dst): \(errnoText)") }
            for name in try list(src) { try copyTree(src + "/" + name, dst + "/" + name) }
            chmod(dst, st.st_mode & 0o7777)
            _ = lchown(dst, st.st_uid, st.st_gid)
        } else if isReg(st) {
            try copyFile(src, dst, mode: st.st_mode & 0o7777)
            _ = lchown(dst, st.st_uid, st.st_gid)
        } else if isLink(st) {
            var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = readlink(src, &buf, buf.count - 1)
            guard n >= 0 else { throw PluginError(.internal, "readlink \(src): \(errnoText)") }
            buf[n] = 0
            if symlink(buf, dst) != 0 && errno != EEXIST { throw PluginError(.internal, "symlink \(dst): \(errnoText)") }
            _ = lchown(dst, st.st_uid, st.st_gid)
        }
    }

    static func copyFile(_ src: String, _ dst: String, mode: mode_t = 0o600) throws {
        let i = open(src, O_RDONLY | O_CLOEXEC)
        guard i >= 0 else { throw PluginError(.internal, "open \(src): \(errnoText)") }
        defer { close(i) }
        let o = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard o >= 0 else { throw PluginError(.internal, "create \(dst): \(errnoText)") }
        defer { close(o) }
        // Cheapest first: a reflink (FICLONE: the copy shares the source's blocks until either is written; instant on
        // btrfs and xfs), then an in-kernel copy (sendfile: no round trip through user memory), then read/write.
        let FICLONE: UInt = 0x4004_9409
        if ioctl(o, FICLONE, i) == 0 { fchmod(o, mode); return }
        var st = stat()
        if fstat(i, &st) == 0, st.st_size > 0 {
            var left = Int(st.st_size)
            while left > 0 {
                let n = sendfile(o, i, nil, min(left, 1 << 30))
                if n < 0 {
                    if errno == EINTR { continue }
                    if errno == ENOSPC { throw PluginError(.resourceExhausted, "write \(dst): \(errnoText)") }
                    break  // not supported here: fall back below, from where sendfile stopped
                }
                if n == 0 { break }
                left -= n
            }
            if left == 0 { fchmod(o, mode); return }
        }
        let size = 1 << 20
        let buf = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        defer { buf.deallocate() }
        while true {
            let n = read(i, buf, size)
            if n < 0 { if errno == EINTR { continue }; throw PluginError(.internal, "read \(src): \(errnoText)") }
            if n == 0 { break }
            var off = 0
            while off < n {
                let w = write(o, buf + off, n - off)
                if w < 0 {
                    if errno == EINTR { continue }
                    let e = errno
                    throw PluginError(e == ENOSPC ? .resourceExhausted : .internal, "write \(dst): \(String(cString: strerror(e)))")
                }
                off += w
            }
        }
        fchmod(o, mode)
    }

    /// Creates (or grows) a file to `size` bytes with its blocks allocated (posix_fallocate), so that writes
    /// through a published block volume cannot fail for lack of space.
    static func preallocate(_ path: String, size: Int64, create: Bool) throws {
        let fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0o600)
        guard fd >= 0 else { throw PluginError(.internal, "open \(path): \(errnoText)") }
        defer { close(fd) }
        let rc = posix_fallocate(fd, 0, off_t(size))
        if rc != 0 {
            let why = String(cString: strerror(rc))
            throw PluginError(rc == ENOSPC ? .resourceExhausted : .internal, "allocating \(size) bytes for \(path): \(why)")
        }
    }

    // MARK: mounts

    /// Mount points in this mount namespace, from /proc/self/mountinfo (octal escapes decoded).
    static func mountPoints() -> Set<String> {
        let fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            data.append(contentsOf: buf[0..<n])
        }
        var out = Set<String>()
        for line in data.split(separator: UInt8(ascii: "\n")) {
            let fields = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
            if fields.count > 4 { out.insert(unescape(Array(fields[4]))) }
        }
        return out
    }

    static func unescape(_ b: [UInt8]) -> String {
        var out: [UInt8] = []
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "\\"), i + 3 < b.count,
               let v = UInt8(String(decoding: b[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func isMountPoint(_ path: String) -> Bool { mountPoints().contains(path) }

    /// true when `a` and `b` are the same inode (a bind mount of `b` at `a` makes them so).
    static func sameFile(_ a: String, _ b: String) -> Bool {
        guard let x = statOf(a), let y = statOf(b) else { return false }
        return x.st_dev == y.st_dev && x.st_ino == y.st_ino
    }

    /// Bind-mounts `source` at `target` (read-only with a remount when asked).
    static func bindMount(_ source: String, _ target: String, readonly: Bool) throws {
        if mount(source, target, nil, MS_BIND, nil) != 0 {
            throw mountError("mount --bind \(source) \(target)")
        }
        if readonly, mount(nil, target, nil, MS_REMOUNT | MS_BIND | MS_RDONLY, nil) != 0 {
            let e = mountError("remount read-only \(target)")
            _ = umount2(target, 0)
            throw e
        }
    }

    /// Unmounts `target` until it is no longer a mount point. Not mounted is fine.
    static func unmount(_ target: String) throws {
        var tries = 0
        while isMountPoint(target) && tries < 8 {
            if umount2(target, 0) != 0 {
                if errno == EINVAL || errno == ENOENT { return }
                if errno == EBUSY { throw PluginError(.failedPrecondition, "\(target) is busy (a process uses it); stop it and retry") }
                throw mountError("umount \(target)")
            }
            tries += 1
        }
    }

    static func mountError(_ what: String) -> PluginError {
        let e = errno
        let why = String(cString: strerror(e))
        if e == EPERM || e == EACCES {
            return PluginError(.failedPrecondition, "\(what): \(why); bind mounts need root (CAP_SYS_ADMIN): run berthd as root")
        }
        return PluginError(.internal, "\(what): \(why)")
    }
}
