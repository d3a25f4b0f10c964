// berth-cni's main-plugin mode: runs the real CNI plugin that makes the interface (found in CNI_PATH, fed the
// delegate configuration berthd planned), and makes the host's VLAN sub-interface for macvlan/ipvlan over netlink.
// C library only, like the rest of berth-cni.
import BerthWire

#if canImport(Glibc)
import Glibc
#endif

/// What a delegate plugin did: its exit status and what it printed.
struct DelegateRun {
    var status: Int32
    var stdout: [UInt8]
}

/// Finds `type` in CNI_PATH (colon-separated directories), as the runtime would.
func findPlugin(_ type: String) -> String? {
    guard !type.isEmpty, !type.contains("/") else { return nil }
    for dir in (env("CNI_PATH") ?? "").split(separator: ":") where !dir.isEmpty {
        let p = "\(dir)/\(type)"
        if access(p, X_OK) == 0 { return p }
    }
    return nil
}

/// Runs a CNI plugin with `command`, the caller's environment (CNI_ARGS reduced to IgnoreUnknown=1: the delegate must
/// not see Berth's keys, nor IP= which `static` would add to its addresses) and `config` on stdin.
func runDelegate(_ path: String, command: String, config: JSON) -> DelegateRun {
    var envs: [String] = []
    var e = environ
    while let p = e.pointee {
        let s = String(cString: p)
        if !s.hasPrefix("CNI_ARGS=") && !s.hasPrefix("CNI_COMMAND=") { envs.append(s) }
        e += 1
    }
    envs += ["CNI_COMMAND=\(command)", "CNI_ARGS=IgnoreUnknown=1"]
    var inPipe: [Int32] = [0, 0], outPipe: [Int32] = [0, 0]
    guard pipe(&inPipe) == 0, pipe(&outPipe) == 0 else { return DelegateRun(status: -1, stdout: []) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
    posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
    for fd in inPipe + outPipe { posix_spawn_file_actions_addclose(&actions, fd) }
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup(path), nil]
    let envp: [UnsafeMutablePointer<CChar>?] = envs.map { strdup($0) } + [nil]
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, path, &actions, nil, argv, envp)
    posix_spawn_file_actions_destroy(&actions)
    for p in argv + envp { free(p) }
    close(inPipe[0])
    close(outPipe[1])
    guard rc == 0 else {
        close(inPipe[1]); close(outPipe[0])
        return DelegateRun(status: -1, stdout: Array("cannot run \(path): \(String(cString: strerror(rc)))".utf8))
    }
    let bytes = config.bytes
    var off = 0
    while off < bytes.count {
        let n = bytes[off...].withUnsafeBytes { write(inPipe[1], $0.baseAddress, $0.count) }
        if n > 0 { off += n } else if n < 0 && errno == EINTR { continue } else { break }
    }
    close(inPipe[1])
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = buf.withUnsafeMutableBytes { read(outPipe[0], $0.baseAddress, 65536) }
        if n > 0 { out.append(contentsOf: buf[0..<n]) } else if n < 0 && errno == EINTR { continue } else { break }
    }
    close(outPipe[0])
    var st: Int32 = 0
    while waitpid(pid, &st, 0) < 0 && errno == EINTR {}
    let exited = (st & 0x7f) == 0
    return DelegateRun(status: exited ? (st >> 8) & 0xff : 128 + (st & 0x7f), stdout: out)
}

/// True when an interface of that name exists in this network namespace.
func linkExists(_ name: String) -> Bool { if_nametoindex(name) != 0 }

/// Makes the VLAN sub-interface `name` (id `vlan`) on `parent` and brings it up, unless it exists. Returns an error
/// message, or nil on success.
func ensureVlan(parent: String, vlan: Int, name: String) -> String? {
    if linkExists(name) { return setUp(name) }
    let parentIndex = if_nametoindex(parent)
    guard parentIndex != 0 else { return "the parent interface \(parent) does not exist on this host (pool's \"parent\", or \"parent\" in the network configuration)" }
    var msg = Netlink.message(type: 16 /* RTM_NEWLINK */, flags: 0x1 | 0x4 | 0x400 | 0x200 /* REQUEST|ACK|CREATE|EXCL */)
    msg += Netlink.ifinfo(flags: 1 /* IFF_UP */, change: 1)
    msg += Netlink.attr(5 /* IFLA_LINK */, Netlink.u32(parentIndex))
    msg += Netlink.attr(3 /* IFLA_IFNAME */, Array(name.utf8) + [0])
    let data = Netlink.attr(1 /* IFLA_VLAN_ID */, Netlink.u16(UInt16(vlan)))
    msg += Netlink.attr(18 /* IFLA_LINKINFO */, Netlink.attr(1 /* IFLA_INFO_KIND */, Array("vlan".utf8) + [0]) + Netlink.attr(2 /* IFLA_INFO_DATA */, data))
    let err = Netlink.send(msg)
    if err == 0 || err == EEXIST { return linkExists(name) ? setUp(name) : "VLAN interface \(name) vanished after it was made" }
    let hint = err == EOPNOTSUPP ? " (this kernel has no 802.1Q VLAN support: load the 8021q module)" : ""
    return "cannot make VLAN \(vlan) interface \(name) on \(parent): \(String(cString: strerror(err)))\(hint)"
}

/// Brings an interface up (IFF_UP through an ioctl). Returns an error message, or nil.
func setUp(_ name: String) -> String? {
    let fd = Glibc.socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { return "socket(): \(String(cString: strerror(errno)))" }
    defer { close(fd) }
    var req = ifreq()
    withUnsafeMutableBytes(of: &req.ifr_ifrn.ifrn_name) { p in for (i, b) in name.utf8.prefix(15).enumerated() { p[i] = b } }
    guard ioctl(fd, UInt(SIOCGIFFLAGS), &req) == 0 else { return "cannot read the flags of \(name): \(String(cString: strerror(errno)))" }
    if req.ifr_ifru.ifru_flags & Int16(IFF_UP) != 0 { return nil }
    req.ifr_ifru.ifru_flags |= Int16(IFF_UP)
    guard ioctl(fd, UInt(SIOCSIFFLAGS), &req) == 0 else { return "cannot bring \(name) up: \(String(cString: strerror(errno)))" }
    return nil
}

/// Just enough rtnetlink to make one link: messages in host byte order, attributes padded to 4 bytes.
enum Netlink {
    static func u16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v) { Array($0) } }
    static func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v) { Array($0) } }
    static func pad(_ b: [UInt8]) -> [UInt8] { b + [UInt8](repeating: 0, count: (4 - b.count % 4) % 4) }

    /// An nlmsghdr without its length (send fills it in).
    static func message(type: UInt16, flags: UInt16) -> [UInt8] { u32(0) + u16(type) + u16(flags) + u32(1) + u32(0) }
    /// struct ifinfomsg: family, pad, type, index, flags, change.
    static func ifinfo(flags: UInt32, change: UInt32) -> [UInt8] { [0, 0] + u16(0) + u32(0) + u32(flags) + u32(change) }
    static func attr(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] { pad(u16(UInt16(4 + payload.count)) + u16(type) + payload) }

    /// Sends one request and reads its acknowledgement. Returns 0 or an errno.
    static func send(_ body: [UInt8]) -> Int32 {
        var msg = body
        let len = u32(UInt32(msg.count))
        for i in 0..<4 { msg[i] = len[i] }
        let fd = Glibc.socket(AF_NETLINK, Int32(SOCK_RAW.rawValue), 0 /* NETLINK_ROUTE */)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        // No address: a netlink socket sends to the kernel (port 0) by default.
        let sent = msg.withUnsafeBytes { p in Glibc.send(fd, p.baseAddress, p.count, 0) }
        guard sent == msg.count else { return errno }
        var buf = [UInt8](repeating: 0, count: 8192)
        let n = buf.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n >= 20 else { return n < 0 ? errno : EIO }
        // NLMSG_ERROR (2): the header, then a signed errno (0 for the acknowledgement).
        let type = UInt16(buf[4]) | UInt16(buf[5]) << 8
        guard type == 2 else { return 0 }
        let code = buf[16..<20].withUnsafeBytes { $0.loadUnaligned(as: Int32.self) }
        return -code
    }
}
