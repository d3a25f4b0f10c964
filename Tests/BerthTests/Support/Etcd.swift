// Test support: a real etcd (Debian's etcd-server, binary `etcd`) started on free loopback ports with a temporary data
// directory, waited for until healthy, and killed by `stop()`.
import BerthWire
import Foundation
import XCTest

final class EtcdProcess {
    let dir: String
    let clientPort: Int
    let process = Process()
    var endpoint: String { "http://127.0.0.1:\(clientPort)" }

    /// Starts etcd; throws with a clear message when the binary is missing or it does not become healthy in time.
    init(extraArgs: [String] = []) throws {
        guard let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw BerthError(.failedPrecondition, "etcd is not installed (looked for /usr/bin/etcd and /usr/local/bin/etcd): install Debian's etcd-server (it is in .ci/apt-packages)")
        }
        dir = tempDir("etcd")
        clientPort = EtcdProcess.freePort()
        let peerPort = EtcdProcess.freePort()
        let peer = "http://127.0.0.1:\(peerPort)"
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--name", "t", "--data-dir", dir + "/data",
                             "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
                             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                             "--initial-cluster", "t=\(peer)", "--log-outputs", dir + "/etcd.log", "--logger", "zap"] + extraArgs
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let conn = UnixHTTPConnection(endpoint: .tcp(host: "127.0.0.1", port: clientPort), timeoutSeconds: 2)
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if let r = try? conn.request("GET", "/health"), r.status == 200, r.text.contains("true") { return }
            conn.close()
            guard process.isRunning else { break }
            usleep(100_000)
        }
        let log = (try? String(contentsOfFile: dir + "/etcd.log", encoding: .utf8)) ?? ""
        stop()
        throw BerthError(.unavailable, "etcd on 127.0.0.1:\(clientPort) did not become healthy within 20 s; its log ends:\n\(log.suffix(1500))")
    }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
