// The node side of an instance's network: a named network namespace per instance and the site's CNI chain run
// into it (Debian's `bridge` plugin with `berth-cni` as IPAM, so the address is the one the network kind already
// holds for the instance's attachment key: ADD is idempotent per key, no second address is allocated).
import BerthWire
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Runs a program and returns its exit status, stdout and stderr (small outputs: CNI results, ip(8) messages).
func runProgram(_ path: String, _ args: [String], env: [String: String]? = nil, stdin: [UInt8] = []) -> (Int32, String, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    if let env { p.environment = env }
    let inPipe = Pipe(), outPipe = Pipe(), errPipe = Pipe()
    p.standardInput = inPipe
    p.standardOutput = outPipe
    p.standardError = errPipe
    do { try p.run() } catch { return (127, "", "cannot run \(path): \(error)") }
    inPipe.fileHandleForWriting.write(Data(stdin))
    try? inPipe.fileHandleForWriting.close()
    let out = outPipe.fileHandleForReading.readDataToEndOfFile()
    let err = errPipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
}

/// Network namespaces and the CNI chain of this node's instances.
struct NodeNet {
    let bridge: String
    let cniPath: String
    let socket: String
    let node: String
    let confDir: String

    static let prefix = "berth-"
    static let netnsDir = "/run/netns"

    static func netnsName(_ containerID: String) -> String { prefix + containerID }
    static func netnsPath(_ containerID: String) -> String { "\(netnsDir)/\(netnsName(containerID))" }

    /// The container ids of every namespace this agent made (leftovers are found from these names).
    static func namespaces() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: netnsDir)) ?? []).filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count)) }
    }

    /// The CNI network configuration of a Berth network, as written under the agent's directory.
    func config(network: String) -> JSON {
        ["cniVersion": "1.0.0", "name": .string("berth-\(network)"), "type": "bridge", "bridge": .string(bridge), "isGateway": true,
         "ipMasq": false, "hairpinMode": false,
         "ipam": ["type": "berth-cni", "network": .string(network), "socket": .string(socket), "node": .string(node)]]
    }

    func writeConfig(network: String) throws -> [UInt8] {
        let c = config(network: network)
        let bytes = Array(c.serialized.utf8)
        try FileManager.default.createDirectory(atPath: confDir, withIntermediateDirectories: true)
        let path = "\(confDir)/\(network).conf"
        if FileManager.default.contents(atPath: path).map({ Array($0) }) != bytes {
            FileManager.default.createFile(atPath: path, contents: Data(bytes))
        }
        return bytes
    }

    func ip(_ args: [String]) throws {
        let (rc, _, err) = runProgram("/usr/sbin/ip", args)
        guard rc == 0 else { throw BerthError(.internal, "ip \(args.joined(separator: " ")): \(err.trimmingCharacters(in: .whitespacesAndNewlines))") }
    }

    /// Makes the namespace (if missing) with its loopback up, and runs CNI ADD into it. Idempotent.
    func setUp(_ r: PlacedRun) throws {
        let ns = Self.netnsName(r.containerID)
        if !FileManager.default.fileExists(atPath: Self.netnsPath(r.containerID)) {
            try ip(["netns", "add", ns])
            try ip(["-n", ns, "link", "set", "lo", "up"])
        }
        guard let network = r.network else { return }
        // Already attached (a restart in the same namespace): the bridge plugin refuses a second eth0.
        if runProgram("/usr/sbin/ip", ["-n", ns, "link", "show", "eth0"]).0 == 0 { return }
        _ = try cni("ADD", network: network, containerID: r.containerID)
        // A MAC that follows the address (the bridge plugin's is random): a stateful ordinal re-placed with its fixed
        // address comes back with the same MAC too, so neighbours' ARP caches stay right.
        if let mac = Self.mac(for: r.ip) { try ip(["-n", ns, "link", "set", "eth0", "address", mac]) }
    }

    /// 0a:58 (locally administered, unicast) and the address's last four bytes, for an instance's eth0; nil without
    /// an address.
    static func mac(for ip: String?) -> String? {
        guard let ip else { return nil }
        var bytes: [UInt8]
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, ip, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
        } else if inet_pton(AF_INET6, ip, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0.suffix(4)) }
        } else {
            return nil
        }
        return ([0x0a, 0x58] + bytes).map { String(format: "%02x", $0) }.joined(separator: ":")
    }

    /// CNI DEL (when the namespace was attached to a network), then the namespace. Idempotent; the veth pair goes
    /// with the namespace.
    func tearDown(containerID: String, network: String?) throws {
        var first: Error?
        let path = Self.netnsPath(containerID)
        if let network {
            do { _ = try cni("DEL", network: network, containerID: containerID) } catch { first = error }
        }
        if FileManager.default.fileExists(atPath: path) {
            do { try ip(["netns", "delete", Self.netnsName(containerID)]) } catch { first = first ?? error }
        }
        if let first { throw first }
    }

    /// Runs the chain's main plugin (`bridge`) with one command; returns its result.
    func cni(_ command: String, network: String, containerID: String) throws -> JSON? {
        let conf = try writeConfig(network: network)
        guard let plugin = cniPath.split(separator: ":").map({ "\($0)/bridge" }).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw BerthError(.failedPrecondition, "the CNI bridge plugin is not in \(cniPath) (Debian: containernetworking-plugins; site key agent.cniPath)")
        }
        var env = ProcessInfo.processInfo.environment
        env["CNI_COMMAND"] = command
        env["CNI_CONTAINERID"] = containerID
        env["CNI_NETNS"] = Self.netnsPath(containerID)
        env["CNI_IFNAME"] = "eth0"
        env["CNI_PATH"] = cniPath
        env["BERTH_SOCKET"] = socket
        let (rc, out, err) = runProgram(plugin, [], env: env, stdin: conf)
        guard rc == 0 else {
            let msg = (try? JSON.parse(Array(out.utf8)))?["msg"]?.string ?? (out + err).trimmingCharacters(in: .whitespacesAndNewlines)
            throw BerthError(.unavailable, "CNI \(command) of \(containerID) on network \(network) (bridge \(bridge)) failed: \(msg)")
        }
        return out.isEmpty ? nil : try? JSON.parse(Array(out.utf8))
    }
}
