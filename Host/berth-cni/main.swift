// berth-cni — a CNI IPAM plugin that forwards to berthd over its unix socket.
//
// A container runtime (or a main plugin such as `bridge`) execs this for every call, so start-up is most of its
// cost: it uses only the C library and BerthWire (no Foundation), reads the environment and stdin, sends one
// request to berthd (POST /v1/cni), prints berthd's answer and exits with its code. berthd does the work and
// formats the result in the configuration's own cniVersion.
//
// Network configuration, `ipam` section (all optional):
//   "type":    "berth-cni"
//   "socket":  berthd's API socket (default: $BERTH_SOCKET, else /run/berth/berthd.sock, which berthd links to
//              its socket: site key api.link)
//   "network": the Berth network (network plugin instance) to allocate from (default "default")
//   "pool":    a pool of that network (default: the plugin's choice for the node)
//   "node":    this node's name (default: the node berthd serves, site key `node`, else its host name)
//   "identity": {"kubernetes": true, "releasePolicy", "keepSeconds"}: how CNI_ARGS name stateful identities
//
// Main-plugin mode: when the configuration's top-level "type" is this executable's name ("berth-cni", or a link
// to it), the same keys sit at the top level and berth-cni makes the interface too: berthd allocates and plans a
// delegate (the pool's macvlan, ipvlan, bridge or vlan, with its VLAN, the address through `static` IPAM and the
// bound MAC), berth-cni runs it from CNI_PATH and prints its full result (interfaces and ips). See
// sdk-docs/kinds/network.md, "berth-cni as the main plugin".
import BerthWire

#if canImport(Glibc)
import Glibc
#endif

let defaultSocket = "/run/berth/berthd.sock"
let supported: [JSON] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

/// An environment variable, decoded strictly (Names): bytes that are not UTF-8 fail with code 4 naming it, rather
/// than becoming U+FFFD (two different container ids would then be one).
func env(_ k: String) -> String? {
    guard let p = getenv(k) else { return nil }
    do { return try Names.decode(UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p)), k) } catch {
        fail("1.0.0", 4, "invalid environment variable \(k): \(error)")
    }
}

func readStdin() -> [UInt8] {
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { read(0, $0.baseAddress, 65536) }
        if n > 0 { out.append(contentsOf: buf[0..<n]) } else if n < 0 && errno == EINTR { continue } else { break }
    }
    return out
}

func emit(_ j: JSON) {
    var s = j.serialized
    s += "\n"
    _ = s.withUTF8 { write(1, $0.baseAddress, $0.count) }
}

func fail(_ version: String, _ code: Int, _ msg: String, _ details: String = "") -> Never {
    emit(["cniVersion": .string(version), "code": .number(Double(code)), "msg": .string(msg), "details": .string(details)])
    exit(Int32(code > 255 ? 1 : code))
}

let command = env("CNI_COMMAND") ?? ""
let input = command == "VERSION" ? [] : readStdin()
var decodeError = ""
let config: JSON
do { config = try JSON.parse(input) } catch { config = .null; decodeError = "\(error)" }  // also a NUL or bytes that are not UTF-8
let version = config["cniVersion"]?.string ?? "1.0.0"

if command == "VERSION" {
    emit(["cniVersion": "1.1.0", "supportedVersions": .array(supported)])
    exit(0)
}
guard !command.isEmpty else { fail(version, 4, "CNI_COMMAND is not set", "berth-cni is a CNI IPAM plugin: a container runtime runs it") }
guard case .object = config else {
    fail(version, input.isEmpty ? 7 : 6, input.isEmpty ? "no network configuration on stdin" : "cannot decode the network configuration", decodeError)
}

// Required environment per command (CNI SPEC.md): DEL and GC/STATUS do not need a netns.
var missing: [String] = []
let needs: [String]
switch command {
case "ADD": needs = ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"]
case "CHECK": needs = ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"]
case "DEL": needs = ["CNI_CONTAINERID", "CNI_IFNAME"]
default: needs = []
}
for k in needs where (env(k) ?? "").isEmpty { missing.append(k) }
if !missing.isEmpty { fail(version, 4, "missing environment variable\(missing.count > 1 ? "s" : ""): \(missing.joined(separator: ", "))") }

// The socket comes from the ipam section: one that is not an object (or a socket that is not a string) is refused
// here, code 7, rather than read as "no socket given" (berthd checks the rest of the section).
if let ipam = config["ipam"] {
    guard case .object = ipam else { fail(version, 7, "the \"ipam\" section of the network configuration must be an object, got \(ipam.typeName)") }
    if let s = ipam["socket"], s.string == nil { fail(version, 7, "ipam.socket must be a string, got \(s.typeName)") }
}
let selfName = String((CommandLine.arguments.first ?? "berth-cni").split(separator: "/").last ?? "berth-cni")
// Main plugin when the runtime ran us as the configuration's `type`; a configuration whose ipam section also names
// berth-cni uses it as the IPAM plugin only (as before the main mode existed).
let mainMode = config["type"]?.string == selfName && config["ipam"]?["type"]?.string != selfName
let berthKeys = mainMode ? config : (config["ipam"] ?? .null)
let socket = berthKeys["socket"]?.string ?? env("BERTH_SOCKET") ?? defaultSocket
let conn = UnixHTTPConnection(path: socket, timeoutSeconds: 60)

/// One call of berthd's CNI route: (exit code, what it printed). Exits on transport errors.
func berthd(_ command: String, _ extra: [(String, JSON)] = []) -> (Int, JSON?) {
    var request: JSON = [
        "command": .string(command), "containerID": .string(env("CNI_CONTAINERID") ?? ""), "netns": .string(env("CNI_NETNS") ?? ""),
        "ifname": .string(env("CNI_IFNAME") ?? "eth0"), "args": .string(env("CNI_ARGS") ?? ""), "config": config,
    ]
    if mainMode { request = request.setting("main", true) }
    for (k, v) in extra { request = request.setting(k, v) }
    do {
        let resp = try conn.request("POST", "/v1/cni", body: request.bytes)
        guard resp.status == 200, let body = try? resp.json() else {
            let err = (try? resp.json())?["error"]?.string ?? resp.text
            fail(version, resp.status == 413 || resp.status == 400 ? 7 : 11, "berthd refused the request (HTTP \(resp.status))", err)
        }
        let out = body["stdout"].flatMap { $0.isNull ? nil : $0 }
        return (body["exitCode"]?.int ?? 999, out)
    } catch let e as WireError {
        fail(version, 11, "berthd is unreachable at \(socket)", e.message)
    } catch {
        fail(version, 11, "berthd is unreachable at \(socket)", "\(error)")
    }
}

func finish(_ code: Int, _ out: JSON?) -> Never {
    if let out { emit(out) }
    exit(Int32(code == 0 ? 0 : (code > 255 ? 1 : code)))
}

if mainMode { runMain(command) }
let (code, out) = berthd(command)
finish(code, out)
