// One berthd per state directory: an exclusive lock on <stateDir>/berthd.lock, held for the daemon's life (the pid
// written inside says who holds it), and an API socket that another live process answers on is never taken over.
import BerthPlugins
import BerthStore
import Foundation

#if canImport(Glibc)
import Glibc
#endif

public struct StateLockError: Error, CustomStringConvertible {
    public let description: String
}

public enum StateLock {
    static func lockPath(_ stateDir: String) -> String { "\(stateDir)/berthd.lock" }

    /// Takes the state directory's lock, or throws naming the process that holds it. The descriptor is never closed:
    /// the kernel releases the lock when this process exits, however it exits. Close-on-exec, so plugin runners
    /// never inherit it.
    public static func acquire(stateDir: String) throws -> Int32 {
        do { try makeDirectories(stateDir, mode: 0o700) } catch {
            throw StateLockError(description: "cannot create the state directory \(stateDir): \(error)")
        }
        let path = lockPath(stateDir)
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw StateLockError(description: "cannot open the lock file \(path): \(String(cString: strerror(errno)))")
        }
        if flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let err = errno
            let holder = (try? readFile(path)).map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
            close(fd)
            guard err == EAGAIN else {  // EAGAIN is EWOULDBLOCK
                throw StateLockError(description: "cannot lock \(path): \(String(cString: strerror(err)))")
            }
            throw StateLockError(description: "the state directory \(stateDir) is in use by another berthd (pid \(holder.isEmpty ? "unknown" : holder), "
                + "which holds \(path)); stop that berthd first, or give this one another state directory (--state-dir)")
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        return fd
    }

    /// Refuses a socket path that a live process answers on (a stale socket file, which refuses connections, is
    /// replaced as before). Names the serving process when the kernel tells (SO_PEERCRED).
    public static func refuseServedSocket(_ path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in
            for (i, b) in bytes.enumerated() { p[i] = b }
            p[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else { return }
        var cred: (pid: Int32, uid: UInt32, gid: UInt32) = (0, 0, 0)  // struct ucred
        var len = socklen_t(MemoryLayout.size(ofValue: cred))
        let who = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid > 0 ? "pid \(cred.pid)" : "an unknown process"
        throw StateLockError(description: "the API socket \(path) is served by another process (\(who)); stop it first, "
            + "or give this berthd another socket (--socket or api.socket)")
    }
}
