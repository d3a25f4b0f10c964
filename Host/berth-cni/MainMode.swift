// berth-cni as the main plugin: ADD allocates through berthd and runs the planned delegate; DEL runs the delegate's
// DEL, then releases; CHECK asks berthd, then the delegate. GC and STATUS only concern the addresses.
import BerthWire

#if canImport(Glibc)
import Glibc
#endif

func runMain(_ command: String) -> Never {
    switch command {
    case "ADD": mainAdd()
    case "DEL": mainDel()
    case "CHECK": mainCheck()
    default:
        let (code, out) = berthd(command)
        finish(code, out)
    }
}

/// Runs the planned delegate; on failure returns the delegate's error (in our cniVersion) and its exit code.
func delegate(_ plan: JSON, _ command: String) -> (Int, JSON) {
    let d = plan["delegate"] ?? .null
    let type = d["type"]?.string ?? ""
    guard let path = findPlugin(type) else {
        return (5, ["cniVersion": .string(version), "code": 5, "msg": .string("delegate plugin \"\(type)\" is not in CNI_PATH"),
                    "details": .string("CNI_PATH=\(env("CNI_PATH") ?? "(unset)")")])
    }
    let run = runDelegate(path, command: command, config: d)
    let out = (try? JSON.parse(run.stdout)) ?? .null
    if run.status == 0 { return (0, out) }
    let msg = out["msg"]?.string ?? String(decoding: run.stdout, as: UTF8.self)
    let code = out["code"]?.int ?? 999
    return (code == 0 ? 999 : code, ["cniVersion": .string(version), "code": .number(Double(code == 0 ? 999 : code)),
                                     "msg": .string("\(type): \(msg)"), "details": out["details"] ?? .string("")])
}

/// The delegate's result (cniVersion 1.0.0) in the version the runtime asked for.
func convert(_ r: JSON) -> JSON {
    var out = r.setting("cniVersion", .string(version))
    if version.hasPrefix("0.3") || version == "0.4.0", let ips = r["ips"]?.array {
        out = out.setting("ips", .array(ips.map { ip in
            ip.setting("version", .string((ip["address"]?.string ?? "").contains(":") ? "6" : "4"))
        }))
    }
    return out
}

func mainAdd() -> Never {
    let (code, planOut) = berthd("ADD")
    guard code == 0, let plan = planOut else { finish(code, planOut) }
    let created = plan["created"]?.bool ?? false
    func undo() { if created { _ = berthd("DEL", [("release", true)]) } }
    if let v = plan["vlanLink"], let parent = v["parent"]?.string, let id = v["vlan"]?.int, let name = v["name"]?.string,
       let err = ensureVlan(parent: parent, vlan: id, name: name) {
        undo()
        fail(version, 5, "cannot make the host's VLAN interface", err)
    }
    let (dc, result) = delegate(plan, "ADD")
    if dc != 0 {
        undo()
        finish(dc, result)
    }
    finish(0, convert(result))
}

func mainDel() -> Never {
    let (code, planOut) = berthd("DEL")
    guard code == 0 else { finish(code, planOut) }
    if let plan = planOut, let d = plan["delegate"], !d.isNull {
        let (dc, err) = delegate(plan, "DEL")
        // Best effort when things are already gone: the namespace (its interfaces went with it) or the host's master.
        let netns = env("CNI_NETNS") ?? ""
        let master = d["master"]?.string ?? d["bridge"]?.string ?? ""
        let gone = netns.isEmpty || access(netns, F_OK) != 0 || (!master.isEmpty && !linkExists(master))
        if dc != 0 && !gone { finish(dc, err) }
    }
    let (rc, out) = berthd("DEL", [("release", true)])
    finish(rc, out)
}

func mainCheck() -> Never {
    let (code, planOut) = berthd("CHECK")
    guard code == 0, let plan = planOut else { finish(code, planOut) }
    let (dc, out) = delegate(plan, "CHECK")
    finish(dc, dc == 0 ? nil : out)
}
