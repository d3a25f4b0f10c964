// Checks of a plugin's path before anything is read, copied or opened: every directory and symlink on the way to
// the file (nobody but root or the daemon's user may have been able to swap it), and the file's ELF header.
import BerthStore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

enum PluginPath {
    /// Problems with the directories and symlinks that lead to `path`, walked component by component the way the
    /// kernel resolves it (symlinks spliced in, up to 40 of them). A directory is unsafe when someone other than root
    /// or the daemon's user owns it, or when it is group- or world-writable without the sticky bit (with the sticky
    /// bit, as /tmp, only an entry's owner can replace it, and the entries are checked in turn). A symlink is unsafe
    /// when another user owns it. A missing component is no problem here: the loader reports the missing file.
    static func problems(_ path: String) -> [String] {
        let me = geteuid()
        var problems: [String] = []
        func owner(_ uid: uid_t) -> Bool { uid == 0 || uid == me }
        func checkDir(_ dir: String, _ st: stat) {
            if !owner(st.st_uid) { problems.append("directory \(dir) is owned by uid \(st.st_uid), not root or the daemon's user (uid \(me))") }
            let sticky = st.st_mode & S_ISVTX != 0
            if st.st_mode & S_IWOTH != 0 && !sticky { problems.append("directory \(dir) is world-writable") }
            else if st.st_mode & S_IWGRP != 0 && !sticky { problems.append("directory \(dir) is group-writable") }
        }
        var pending = components(absolute(path))
        var current = "/"
        var st = stat()
        guard lstat("/", &st) == 0 else { return [] }
        checkDir("/", st)
        var hops = 0
        while !pending.isEmpty {
            let c = pending.removeFirst()
            if c == "." { continue }
            if c == ".." { current = parent(current); continue }
            let next = current == "/" ? "/" + c : current + "/" + c
            guard lstat(next, &st) == 0 else { return problems }
            switch st.st_mode & S_IFMT {
            case S_IFLNK:
                if !owner(st.st_uid) { problems.append("symlink \(next) is owned by uid \(st.st_uid), not root or the daemon's user (uid \(me))") }
                hops += 1
                guard hops <= 40, let target = readLink(next) else { return problems }
                if target.hasPrefix("/") { current = "/" }
                pending = components(target) + pending
            case S_IFDIR:
                if !pending.isEmpty { checkDir(next, st) }
                current = next
            default:
                current = next
            }
        }
        return problems
    }

    /// Why `path` is not an ELF shared object for this machine, or nil when it is: the magic, 64-bit, little-endian,
    /// type ET_DYN, and the machine this host runs on. Read from the first 64 bytes only.
    static func notSharedObject(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return "cannot open it: \(String(cString: strerror(errno)))" }
        defer { close(fd) }
        var h = [UInt8](repeating: 0, count: 64)
        let n = h.withUnsafeMutableBytes { read(fd, $0.baseAddress, 64) }
        guard n >= 4, h[0] == 0x7f, h[1] == 0x45, h[2] == 0x4c, h[3] == 0x46 else {
            return "not an ELF file (it does not start with the ELF magic 7f 45 4c 46); give the path of the plugin's .so"
        }
        guard n == 64, h[4] == 2, h[5] == 1 else { return "not a 64-bit little-endian ELF file" }
        let type = UInt16(h[16]) | UInt16(h[17]) << 8
        guard type == 3 else {
            let what = [1: "a relocatable object (.o)", 2: "an executable", 4: "a core dump"][Int(type)] ?? "ELF type \(type)"
            return "an ELF file, but \(what), not a shared object (ET_DYN): build the plugin with -shared"
        }
        let machine = UInt16(h[18]) | UInt16(h[19]) << 8
        #if arch(x86_64)
        let host: (UInt16, String) = (62, "x86-64")
        #elseif arch(arm64)
        let host: (UInt16, String) = (183, "aarch64")
        #else
        let host: (UInt16, String) = (machine, "")
        #endif
        if machine != host.0 { return "a shared object for ELF machine \(machine), not for this host (\(host.1), machine \(host.0))" }
        return nil
    }

    static func absolute(_ p: String) -> String {
        if p.hasPrefix("/") { return p }
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buf, buf.count) != nil else { return "/" + p }
        return String(cString: buf) + "/" + p
    }

    static func components(_ p: String) -> [String] { p.split(separator: "/").map(String.init) }

    static func parent(_ p: String) -> String {
        guard let i = p.lastIndex(of: "/"), i != p.startIndex else { return "/" }
        return String(p[..<i])
    }

    static func readLink(_ p: String) -> String? {
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(p, &buf, buf.count - 1)
        guard n > 0 else { return nil }
        buf[n] = 0
        return String(cString: buf)
    }
}
