// berth-cni as a CNI main plugin (`"type": "berth-cni"` at the top of a network configuration): berthd allocates,
// then the interface is made by a real CNI plugin chosen by the pool (macvlan, ipvlan, bridge or vlan), the way
// Galaxy and Multus delegate. This file builds that delegate's network configuration; berth-cni execs it.
import BerthPlugins
import BerthStore
import BerthWire

public enum CNIMain {
    /// The delegate plugins' cniVersion (Debian's plugins 1.1.1 support up to 1.0.0); berth-cni converts the result.
    static let delegateVersion = "1.0.0"
    static let delegates = ["macvlan", "ipvlan", "bridge", "vlan"]

    /// What berth-cni runs for one attachment (`result` is the network plugin's ADD result, as recorded):
    /// {"cniVersion", "delegate": network configuration, "vlanLink": {"parent", "vlan", "name"} when the host needs a
    /// VLAN sub-interface for macvlan/ipvlan}. The configuration's "delegate" object overrides or adds keys of the
    /// delegate's configuration (e.g. {"type": "macvlan", "mode": "private", "mtu": 1400}) and its "parent" overrides
    /// the pool's parent interface on this host.
    static func plan(_ result: JSON, config: JSON, version: String) throws -> JSON {
        let link = result["link"] ?? .object([])
        let extra = config["delegate"] ?? .object([])
        if !extra.isNull, extra.object == nil {
            throw CNI.Failure(code: .invalidConfig, msg: "\"delegate\" must be an object such as {\"type\": \"macvlan\", \"mode\": \"bridge\"}", details: "")
        }
        let kind = extra["type"]?.string ?? link["type"]?.string ?? "macvlan"
        guard delegates.contains(kind) else {
            throw CNI.Failure(code: .invalidConfig, msg: "delegate type \"\(kind)\" is not supported", details: "use one of \(delegates.joined(separator: ", "))")
        }
        let ips = result["ips"]?.array ?? []
        let pool = ips.first?["pool"]?.string ?? "?"
        let vlan = link["vlan"]?.int ?? ips.first?["vlan"]?.int
        let parent = config["parent"]?.string ?? link["parent"]?.string
        func needParent() throws -> String {
            guard let parent, !parent.isEmpty else {
                throw CNI.Failure(code: .invalidConfig, msg: "pool \(pool) names no parent interface for \(kind)",
                                  details: "set the pool's \"parent\" (berth pools import) or \"parent\" in the network configuration")
            }
            return parent
        }

        var d: JSON = ["cniVersion": .string(delegateVersion), "name": config["name"] ?? "berth", "type": .string(kind)]
        var vlanLink: JSON? = nil
        switch kind {
        case "macvlan", "ipvlan":
            var master = try needParent()
            if let vlan, vlan > 0 {
                let name = vlanName(parent: master, vlan: vlan)
                vlanLink = ["parent": .string(master), "vlan": .number(Double(vlan)), "name": .string(name)]
                master = name
            }
            d = d.setting("master", .string(master)).setting("mode", .string(kind == "macvlan" ? "bridge" : "l2"))
        case "vlan":
            guard let vlan, vlan > 0 else {
                throw CNI.Failure(code: .invalidConfig, msg: "pool \(pool) has no vlan id, which the vlan delegate needs", details: "set the pool's \"vlan\"")
            }
            d = d.setting("master", .string(try needParent())).setting("vlanId", .number(Double(vlan)))
        default:  // bridge: the pool's parent names the bridge; its VLAN becomes the port's VLAN (vlan filtering)
            d = d.setting("bridge", .string(parent ?? "cni0"))
            if let vlan, vlan > 0 { d = d.setting("vlan", .number(Double(vlan))) }
        }
        for (k, v) in extra.object ?? [] where !["type", "name", "cniVersion", "ipam", "runtimeConfig", "prevResult"].contains(k) {
            d = d.setting(k, v)
        }
        if kind != "ipvlan" && kind != "vlan", let mac = ips.first?["mac"]?.string {
            d = d.setting("runtimeConfig", ["mac": .string(mac)])
        }
        var ipam: JSON = ["type": "static", "addresses": .array(ips.map { ip in
            var a: JSON = ["address": ip["address"] ?? .null]
            if let g = ip["gateway"]?.string { a = a.setting("gateway", .string(g)) }
            return a
        })]
        if let routes = result["routes"]?.array, !routes.isEmpty { ipam = ipam.setting("routes", .array(routes)) }
        if let dns = result["dns"], case .object(let kv) = dns, !kv.isEmpty { ipam = ipam.setting("dns", dns) }
        d = d.setting("ipam", ipam)
        if let prev = config["prevResult"], !prev.isNull { d = d.setting("prevResult", toDelegateVersion(prev)) }

        var out: JSON = ["cniVersion": .string(version), "delegate": d]
        if let vlanLink { out = out.setting("vlanLink", vlanLink) }
        return out
    }

    /// The host's VLAN sub-interface for a parent and VLAN id: "<parent>.<id>", or "vl<id>-<parent prefix>" when that
    /// would pass the 15-byte limit of interface names.
    static func vlanName(parent: String, vlan: Int) -> String {
        let plain = "\(parent).\(vlan)"
        if plain.utf8.count <= 15 { return plain }
        let head = "vl\(vlan)-"
        return head + String(parent.prefix(15 - head.count))
    }

    /// A prevResult in the delegate's version: 1.0.0 results carry no ips[].version.
    static func toDelegateVersion(_ r: JSON) -> JSON {
        var out = r.setting("cniVersion", .string(delegateVersion))
        if let ips = r["ips"]?.array {
            out = out.setting("ips", .array(ips.map { ip in
                guard case .object(let kv) = ip else { return ip }
                return .object(kv.filter { $0.0 != "version" })
            }))
        }
        return out
    }
}
