// The well-known socket path: berthd links it to its API socket so that berth-cni (which a container runtime execs
// with no Berth configuration) and the CLI reach the local berthd without per-host settings (site key api.link).
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#endif

enum SocketLink {
    /// True when something accepts connections at `path` (a live daemon's socket, directly or through a link).
    static func live(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return false }
        withUnsafeMutableBytes(of: &addr.sun_path) { p in for (i, b) in bytes.enumerated() { p[i] = b } }
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
        }
    }

    /// The socket path as a link target: absolute, so the link works from any directory.
    static func absolute(_ socket: String) -> String {
        socket.hasPrefix("/") ? socket : FileManager.default.currentDirectoryPath + "/" + socket
    }

    /// Makes `link` point at `socket` unless another live berthd owns it. Returns true when the link is ours.
    static func publish(_ link: String, socket: String, logger: Logger) -> Bool {
        guard !link.isEmpty else { return false }
        let target = absolute(socket)
        if link == socket || link == target { return false }
        let dir = (link as NSString).deletingLastPathComponent
        if mkdir(dir, 0o755) != 0 && errno != EEXIST {
            logger.debug("api.link: cannot create \(dir) (\(String(cString: strerror(errno)))); berth-cni needs its socket configured")
            return false
        }
        if let current = try? FileManager.default.destinationOfSymbolicLink(atPath: link), current != target, live(link) {
            logger.warning("api.link: \(link) points to \(current), where another berthd is serving; left alone (berth-cni there reaches that one)")
            return false
        }
        var st = stat()
        if lstat(link, &st) == 0 {
            if (st.st_mode & S_IFMT) != S_IFLNK && live(link) {
                logger.warning("api.link: \(link) is another daemon's socket; left alone")
                return false
            }
            unlink(link)
        }
        guard symlink(target, link) == 0 else {
            logger.warning("api.link: cannot link \(link) to \(target): \(String(cString: strerror(errno)))")
            return false
        }
        logger.info("berthd's socket is also at \(link) (api.link)")
        return true
    }

    /// Removes the link if it still points at our socket.
    static func withdraw(_ link: String, socket: String) {
        if (try? FileManager.default.destinationOfSymbolicLink(atPath: link)) == absolute(socket) { unlink(link) }
    }
}
