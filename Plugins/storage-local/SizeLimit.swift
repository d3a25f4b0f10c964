// Size enforcement for directory (mount) volumes: each is an ext4 filesystem in a sparse image file
// <root>/volumes/vol-NNNNNNNN.ext4, loop-mounted on its directory, so a write past the volume's size fails with ENOSPC
// whatever filesystem the root is on (project quotas would need a root mounted with prjquota). mkfs.ext4, mount and
// resize2fs (e2fsprogs, util-linux) do the work; mounting needs root. Expansion grows the image and its filesystem.
// ext4's own metadata takes 2-10% of the size (6% at 64 MiB); a volume under 1 MiB gets
// a 1 MiB filesystem (mkfs.ext4's minimum is about 256 KiB).
import BerthPluginKit

#if canImport(Glibc)
import Glibc
#endif

enum SizeLimit {
    /// The smallest filesystem made (mkfs.ext4 needs about 256 KiB): a smaller volume gets this much.
    static let minimumBytes: Int64 = 1 << 20

    static func imagePath(_ dir: String) -> String { dir + ".ext4" }

    /// Why sizes cannot be enforced here, or nil when they can.
    static func unavailable() -> String? {
        if geteuid() != 0 { return "mounting a volume's filesystem needs root: run berthd as root" }
        for tool in ["mkfs.ext4", "e2fsck", "resize2fs", "mount", "losetup"] where which(tool) == nil {
            return "\(tool) is not installed (Debian: e2fsprogs, mount)"
        }
        return nil
    }

    /// Makes the image of `size` bytes, formats it and mounts it on `dir` (created).
    static func create(dir: String, size: Int64) throws {
        if let why = unavailable() {
            throw PluginError(.failedPrecondition, "cannot enforce the size of \(dir): \(why); or set \"enforceSize\": false to account sizes without enforcing them")
        }
        let image = imagePath(dir)
        let fd = open(image, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw PluginError(.internal, "create \(image): \(FS.errnoText)") }
        let rc = ftruncate(fd, off_t(max(size, minimumBytes)))
        let err = errno
        close(fd)
        do {
            guard rc == 0 else {
                // A size the filesystem under the root cannot hold is the caller's to change, not an internal fault.
                if err == EFBIG {
                    throw PluginError(.outOfRange, "\(size) bytes is more than the filesystem under \(dir) can hold as one enforced volume; ask for less, or set \"enforceSize\": false")
                }
                throw PluginError(.internal, "size \(image) to \(size) bytes: \(String(cString: strerror(err)))")
            }
            // No blocks reserved for root, one inode per 64 KiB, and a 1 MiB journal below 512 MiB (1 KiB blocks
            // there; mkfs's default would take 4 MiB): the volume keeps 90-98% of its size for data.
            let journal = size < 512 << 20 ? ["-J", "size=1"] : []
            try run(["mkfs.ext4", "-q", "-F", "-m", "0", "-i", "65536"] + journal + ["-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard", image])
            guard mkdir(dir, 0o755) == 0 || errno == EEXIST else { throw PluginError(.internal, "mkdir \(dir): \(FS.errnoText)") }
            try mount(dir)
        } catch {
            unlink(image)  // a refused create leaves nothing behind
            throw error
        }
    }

    /// Mounts the image of `dir` on it unless it is mounted already (after a reboot, at plugin start).
    static func mount(_ dir: String) throws {
        if FS.isMountPoint(dir) { return }
        try run(["mount", "-o", "loop,nosuid,nodev", imagePath(dir), dir])
        chmod(dir, 0o755)
    }

    /// Grows the image to `size` bytes and its filesystem with it: offline (unmount, e2fsck, resize2fs, mount) when
    /// nothing uses the volume; online when it is staged or published, which needs CAP_SYS_RESOURCE.
    static func grow(dir: String, size: Int64, inUse: Bool) throws {
        let image = imagePath(dir)
        if !inUse { try FS.unmount(dir) }
        guard truncate(image, off_t(max(size, minimumBytes))) == 0 else { throw PluginError(.internal, "grow \(image) to \(size) bytes: \(FS.errnoText)") }
        if !FS.isMountPoint(dir) {
            try run(["e2fsck", "-f", "-p", image], okCodes: [0, 1])
            try run(["resize2fs", image])
            try mount(dir)
            return
        }
        let found = try run(["losetup", "-n", "-O", "NAME", "-j", image])
        guard let device = found.split(separator: "\n").first.map(String.init), device.hasPrefix("/dev/") else {
            throw PluginError(.internal, "no loop device backs \(image)")
        }
        try run(["losetup", "-c", device])
        do { try run(["resize2fs", device]) } catch let e as PluginError {
            throw PluginError(.failedPrecondition, "\(e.message); growing a filesystem while the volume is staged or published needs "
                + "CAP_SYS_RESOURCE: unpublish the volume and expand it again")
        }
    }

    /// Unmounts `dir` and removes it with its image. Idempotent.
    static func remove(dir: String) throws {
        try FS.unmount(dir)
        if rmdir(dir) != 0 && errno != ENOENT { throw PluginError(.internal, "rmdir \(dir): \(FS.errnoText)") }
        if unlink(imagePath(dir)) != 0 && errno != ENOENT { throw PluginError(.internal, "unlink \(imagePath(dir)): \(FS.errnoText)") }
    }

    static func which(_ tool: String) -> String? {
        for d in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] where access("\(d)/\(tool)", X_OK) == 0 { return "\(d)/\(tool)" }
        return nil
    }

    /// Runs a tool and returns its standard output; a non-zero exit is an error carrying its standard error.
    @discardableResult
    static func run(_ argv: [String], okCodes: Set<Int32> = [0]) throws -> String {
        guard let exe = which(argv[0]) else { throw PluginError(.failedPrecondition, "\(argv[0]) is not installed") }
        var out: [Int32] = [0, 0], err: [Int32] = [0, 0]
        guard pipe(&out) == 0, pipe(&err) == 0 else { throw PluginError(.internal, "pipe: \(FS.errnoText)") }
        for fd in out + err { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }  // the child gets them through dup2 only
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, out[1], 1)
        posix_spawn_file_actions_adddup2(&actions, err[1], 2)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        var pid: pid_t = 0
        let args = ([exe] + argv.dropFirst()).map { strdup($0) } + [nil]
        defer { for a in args { free(a) } }
        let env: [UnsafeMutablePointer<CChar>?] = [strdup("PATH=/usr/sbin:/usr/bin:/sbin:/bin"), strdup("LC_ALL=C"), nil]
        defer { for e in env { free(e) } }
        let rc = posix_spawn(&pid, exe, &actions, nil, args, env)
        close(out[1]); close(err[1])
        defer { close(out[0]); close(err[0]) }
        guard rc == 0 else { throw PluginError(.internal, "spawn \(exe): \(String(cString: strerror(rc)))") }
        let stdout = drain(out[0]), stderr = drain(err[0])
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exited = status & 0x7f == 0, code = (status >> 8) & 0xff
        guard exited && okCodes.contains(code) else {
            throw PluginError(.internal, "\(argv.joined(separator: " ")) failed (\(exited ? "exit \(code)" : "signal \(status & 0x7f)")): \(stderr)")
        }
        return stdout
    }

    private static func drain(_ fd: Int32) -> String {
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            data.append(contentsOf: buf[0..<n])
        }
        return String(decoding: data, as: UTF8.self)
    }
}
