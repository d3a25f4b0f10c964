// Health checks of running instances (`spec.run.health`): an exec inside the instance, a TCP connect or an HTTP GET
// at its address, probed by the node agent every period. After `failureThreshold` failures in a row the instance is
// restarted (whatever its restart policy: it is running but not serving), and its status says why.
import BerthPlugins
import BerthWire
import Foundation

#if canImport(Glibc)
import Glibc
#endif

public struct HealthCheck: Sendable, Equatable {
    public enum Probe: Sendable, Equatable {
        case exec([String])
        case tcp(port: Int)
        case http(port: Int, path: String)
    }
    public var probe: Probe
    public var periodSeconds = 5.0
    public var timeoutSeconds = 1.0
    public var failureThreshold = 3
    public var initialDelaySeconds = 0.0

    /// The `health` property of `spec.run`'s schema.
    public static let schemaProperty = #"""
    "health": {"type": "object", "additionalProperties": false, "description": "Optional: probed by the node agent while the instance runs; after failureThreshold failures in a row it is restarted.", "properties": {
            "exec": {"type": "array", "minItems": 1, "maxItems": 64, "items": {"type": "string"}, "description": "a command run inside the instance; exit code 0 is healthy"},
            "tcp": {"type": "object", "additionalProperties": false, "required": ["port"], "properties": {"port": {"type": "integer", "minimum": 1, "maximum": 65535}}, "description": "a TCP connect to the instance's address"},
            "http": {"type": "object", "additionalProperties": false, "required": ["port"], "properties": {"port": {"type": "integer", "minimum": 1, "maximum": 65535}, "path": {"type": "string", "maxLength": 1024, "description": "default /"}}, "description": "an HTTP GET at the instance's address; a 2xx or 3xx answer is healthy"},
            "periodSeconds": {"type": "number", "minimum": 0.1, "maximum": 3600, "description": "default 5"},
            "timeoutSeconds": {"type": "number", "minimum": 0.1, "maximum": 600, "description": "default 1"},
            "failureThreshold": {"type": "integer", "minimum": 1, "maximum": 100, "description": "default 3"},
            "initialDelaySeconds": {"type": "number", "minimum": 0, "maximum": 3600, "description": "after each start; default 0"}}}
    """#

    /// `spec.run.health`; nil without it. Exactly one of exec, tcp and http.
    public static func parse(_ v: JSON?) throws -> HealthCheck? {
        guard let v, !v.isNull else { return nil }
        func bad(_ field: String, _ why: String) -> BerthError { BerthError(.invalidArgument, "spec.run.health\(field.isEmpty ? "" : ".")\(field): \(why)") }
        guard case .object = v else { throw bad("", "must be an object with one of exec, tcp or http") }
        func port(_ j: JSON?, _ field: String) throws -> Int {
            guard let p = j?["port"]?.int, (1...65535).contains(p) else { throw bad("\(field).port", "must be a port number from 1 to 65535, got \(j?["port"]?.serialized ?? "nothing")") }
            return p
        }
        var probes: [Probe] = []
        if let e = v["exec"] {
            guard let xs = e.array, !xs.isEmpty, xs.count <= 64, let argv = Optional(xs.compactMap(\.string)), argv.count == xs.count, !argv[0].isEmpty else {
                throw bad("exec", "must be a non-empty array of strings (the command and its arguments)")
            }
            probes.append(.exec(argv))
        }
        if let t = v["tcp"] { probes.append(.tcp(port: try port(t, "tcp"))) }
        if let h = v["http"] {
            let path = h["path"]?.string ?? "/"
            guard path.hasPrefix("/"), !path.utf8.contains(where: { $0 < 0x21 || $0 == 0x7F }) else { throw bad("http.path", "must start with / and contain no spaces or control characters, got \"\(path)\"") }
            probes.append(.http(port: try port(h, "http"), path: path))
        }
        guard probes.count == 1 else { throw bad("", "give exactly one of exec, tcp or http (got \(probes.count))") }
        var c = HealthCheck(probe: probes[0])
        func number(_ key: String, _ range: ClosedRange<Double>) throws -> Double? {
            guard let j = v[key] else { return nil }
            guard let d = j.double, range.contains(d) else { throw bad(key, "must be a number from \(range.lowerBound) to \(range.upperBound), got \(j.serialized)") }
            return d
        }
        c.periodSeconds = try number("periodSeconds", 0.1...3600) ?? c.periodSeconds
        c.timeoutSeconds = try number("timeoutSeconds", 0.1...600) ?? c.timeoutSeconds
        c.initialDelaySeconds = try number("initialDelaySeconds", 0...3600) ?? c.initialDelaySeconds
        if let f = v["failureThreshold"] {
            guard let n = f.int, (1...100).contains(n) else { throw bad("failureThreshold", "must be an integer from 1 to 100, got \(f.serialized)") }
            c.failureThreshold = n
        }
        return c
    }

    /// Probes once; nil when healthy, else what failed.
    func check(ip: String?, exec: ([String], Int) throws -> Int) -> String? {
        let timeout = max(1, Int(timeoutSeconds.rounded(.up)))
        switch probe {
        case .exec(let argv):
            do {
                let code = try exec(argv, timeout)
                return code == 0 ? nil : "\(argv.joined(separator: " ")) exited with \(code)"
            } catch { return "\(argv.joined(separator: " ")): \((error as? BerthError)?.message ?? "\(error)")" }
        case .tcp(let port):
            guard let ip else { return "the instance has no address to connect to" }
            return Self.connect(ip, port, timeoutSeconds)
        case .http(let port, let path):
            guard let ip else { return "the instance has no address to connect to" }
            let conn = UnixHTTPConnection(endpoint: .tcp(host: ip, port: port), timeoutSeconds: timeout)
            defer { conn.close() }
            do {
                let r = try conn.request("GET", path)
                return (200..<400).contains(r.status) ? nil : "GET http://\(ip):\(port)\(path) answered \(r.status)"
            } catch { return "GET http://\(ip):\(port)\(path): \(error)" }
        }
    }

    /// A TCP connect with a timeout; nil when it was accepted.
    static func connect(_ ip: String, _ port: Int, _ timeout: Double) -> String? {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, ip, &addr.sin_addr) == 1 else { return "\(ip) is not an IPv4 address" }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return "socket: \(String(cString: strerror(errno)))" }
        defer { close(fd) }
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if rc == 0 { return nil }
        guard errno == EINPROGRESS else { return "connect \(ip):\(port): \(String(cString: strerror(errno)))" }
        var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        guard poll(&p, 1, Int32(timeout * 1000)) == 1 else { return "connect \(ip):\(port): no answer within \(timeout) s" }
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
        return err == 0 ? nil : "connect \(ip):\(port): \(String(cString: strerror(err)))"
    }
}

extension NodeAgent {
    /// Probes a running instance's health when due; restarts it after `failureThreshold` failures in a row.
    func probeHealth(_ r: PlacedRun, _ h: HealthCheck, _ s: inout RunStatus, _ rt: RuntimePlugin, now: Double) {
        let due = max(s.nextProbe, s.runningSince + h.initialDelaySeconds)
        guard now >= due else { wake(at: due); return }
        s.nextProbe = now + h.periodSeconds
        wake(at: s.nextProbe)
        guard let failure = h.check(ip: r.ip, exec: { argv, t in
            try rt.exec(r.containerID, command: argv[0], args: Array(argv.dropFirst()), timeoutSeconds: t).exitCode
        }) else {
            if s.health != "healthy" { s.health = "healthy"; s.healthFailures = 0; save(r.containerID, s, persist: false) }
            return
        }
        s.health = "unhealthy"
        s.healthFailures += 1
        s.lastHealthFailure = failure
        guard s.healthFailures >= h.failureThreshold else { save(r.containerID, s, persist: false); return }
        event("runtime.unhealthy", r.subject, ["containerID": .string(r.containerID), "failures": .number(Double(s.healthFailures)),
                                                "reason": .string(failure)])
        s.healthFailures = 0
        s.health = nil
        do {
            _ = try rt.stop(r.containerID, graceSeconds: r.graceSeconds)
            try rt.remove(r.containerID, force: true)
        } catch {
            host.logger.warning("node agent: stopping unhealthy \(r.subject): \(error)")
            save(r.containerID, s, persist: false)
            return
        }
        startInstance(r, &s, rt, restart: true)
    }
}
