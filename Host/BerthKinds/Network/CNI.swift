// The daemon side of berth-cni: turns one CNI IPAM invocation (command, environment, network configuration)
// into a network operation and formats the answer in the configuration's own cniVersion. berth-cni only
// forwards, so that the executable a runtime execs for every call stays tiny.
import BerthPlugins
import BerthStore
import BerthWire
import Foundation

public enum CNI {
    public static let supportedVersions = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

    /// CNI error codes (SPEC.md) and Berth's own (100+), see sdk-docs/kinds/network.md.
    public enum Code: Int {
        case incompatibleVersion = 1, unsupportedField = 2, unknownContainer = 3, invalidEnvironment = 4, ioFailure = 5
        case decodeFailure = 6, invalidConfig = 7, tryAgainLater = 11, statusNotAvailable = 50
        case addressInUse = 100, addressesExhausted = 101, notPermitted = 102, internalError = 999
    }

    /// The CNI code of a refusal. The status alone decides, except NOT_FOUND: a plugin's is an unknown container
    /// (3); the host's ("no network named X") is a configuration the runtime passed (7).
    static func code(_ e: BerthError) -> Code {
        switch e.status {
        case .invalidArgument, .outOfRange: return .invalidConfig
        case .notFound: return e.plugin == nil ? .invalidConfig : .unknownContainer
        case .alreadyExists: return .addressInUse
        case .resourceExhausted: return .addressesExhausted
        case .failedPrecondition: return .notPermitted
        case .unavailable, .aborted: return .tryAgainLater
        default: return .internalError
        }
    }

    public struct Failure: Error {
        public let code: Code
        public let msg: String
        public let details: String
    }

    static func error(_ version: String, _ code: Code, _ msg: String, _ details: String = "") -> JSON {
        ["cniVersion": .string(version), "code": .number(Double(code.rawValue)), "msg": .string(msg), "details": .string(details)]
    }

    /// Handles one invocation. Returns (exit code, JSON to print on stdout or nil for nothing).
    public static func handle(_ req: JSON, network service: NetworkService) async -> (Int, JSON?) {
        let config = req["config"] ?? .null
        let version = config["cniVersion"]?.string ?? "1.0.0"
        do {
            let out = try await run(req, config: config, version: version, service: service)
            return (0, out)
        } catch let f as Failure {
            return (f.code.rawValue, error(version, f.code, f.msg, f.details))
        } catch let e as BerthError {
            let code = code(e)
            return (code.rawValue, error(version, code, e.details?["message"]?.string ?? e.message, e.message))
        } catch {
            return (Code.internalError.rawValue, CNI.error(version, .internalError, "\(error)"))
        }
    }

    static func run(_ req: JSON, config: JSON, version: String, service: NetworkService) async throws -> JSON? {
        guard case .object = config else { throw Failure(code: .decodeFailure, msg: "the network configuration is not a JSON object", details: "") }
        guard supportedVersions.contains(version) else {
            throw Failure(code: .incompatibleVersion, msg: "incompatible CNI version \(version)", details: "berth-cni supports \(supportedVersions.joined(separator: ", "))")
        }
        // Berth's keys: in the ipam section for the IPAM plugin, at the top level for the main plugin (berth-cni as `type`).
        let main = req["main"]?.bool ?? false
        let ipam = main ? config : try ipamSection(config)
        let network = ipam["network"]?.string ?? "default"
        let command = req["command"]?.string ?? ""
        let args = parseArgs(req["args"]?.string ?? "")
        switch command {
        case "ADD":
            let (cid, ifname) = try environmentKey(req)
            var r: JSON = ["containerID": .string(cid), "ifname": .string(ifname),
                           "node": .string(ipam["node"]?.string ?? service.host.site.nodeName)]
            if let pool = ipam["pool"]?.string { r = r.setting("pool", .string(pool)) }
            let ips = try requestedIPs(req["args"]?.string ?? "", config)
            if !ips.isEmpty { r = r.setting("ips", .array(ips.map { .string($0) })) }
            if let id = try identity(args, config: config, section: ipam) { r = r.setting("identity", id) }
            if let mac = config["runtimeConfig"]?["mac"]?.string ?? config["args"]?["cni"]?["mac"]?.string ?? args["MAC"] {
                r = r.setting("mac", .string(mac))
            }
            let existed = main ? try await service.attachment(network: network, containerID: cid, ifname: ifname) != nil : true
            let result = try await service.add(network: network, request: r)
            guard main else { return format(result, version: version) }
            do {
                return try CNIMain.plan(result, config: config, version: version).setting("created", .bool(!existed))
            } catch {
                if !existed { try? await service.del(network: network, containerID: cid, ifname: ifname) }
                throw error
            }
        case "DEL":
            let (cid, ifname) = try environmentKey(req)
            if main && req["release"]?.bool != true {
                // The delegate's DEL comes first (berth-cni runs it with this plan), then "release" frees the addresses.
                let held = try? await service.attachment(network: network, containerID: cid, ifname: ifname)
                guard let held, let plan = try? CNIMain.plan(held, config: config, version: version) else { return ["delegate": .null] }
                return plan
            }
            do { try await service.del(network: network, containerID: cid, ifname: ifname) } catch let e as BerthError where e.status == .notFound && e.details == nil {
                // No such network in berthd: nothing of ours can be held; DEL succeeds.
            }
            return nil
        case "CHECK":
            if version.hasPrefix("0.3") { throw Failure(code: .incompatibleVersion, msg: "CHECK needs cniVersion 0.4.0 or later", details: "") }
            let (cid, ifname) = try environmentKey(req)
            let result = try await service.check(network: network, containerID: cid, ifname: ifname)
            if main { return try CNIMain.plan(result, config: config, version: version) }
            return nil
        case "GC":
            // Without a well-formed list of the attachments to keep, a GC would release every attachment of the
            // network: refuse it and release nothing (CNI SPEC: GC gets cni.dev/valid-attachments).
            guard let list = config["cni.dev/valid-attachments"] ?? config["cni.dev/attachments"] else {
                throw Failure(code: .invalidConfig, msg: "GC needs cni.dev/valid-attachments in the network configuration (the attachments to keep); nothing was released", details: "")
            }
            let valid: [(String, String)]
            do { valid = try NetworkService.validList(list, field: "cni.dev/valid-attachments", ifnameRequired: true) } catch let e as BerthError {
                throw Failure(code: .invalidConfig, msg: "\(e.message); nothing was released", details: "")
            }
            _ = try await service.gc(network: network, valid: valid)
            return nil
        case "STATUS":
            do { _ = try await service.status(network: network) } catch let e as BerthError {
                throw Failure(code: .statusNotAvailable, msg: "network \"\(network)\" cannot allocate addresses", details: e.message)
            }
            return nil
        default:
            throw Failure(code: .invalidEnvironment, msg: "unknown CNI_COMMAND \"\(command)\"", details: "expected ADD, DEL, CHECK, GC, STATUS or VERSION")
        }
    }

    /// CNI_ARGS "K=V;K=V" as a dictionary (later keys win).
    static func parseArgs(_ s: String) -> [String: String] {
        var out: [String: String] = [:]
        for kv in s.split(separator: ";") {
            let parts = kv.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { out[String(parts[0])] = String(parts[1]) }
        }
        return out
    }

    /// The stateful identity a CNI call names, so that fixed addresses work for any runtime: runtimeConfig.identity
    /// {app, ordinal, releasePolicy, keepSeconds}; else CNI_ARGS BERTH_APP + BERTH_ORDINAL (+ BERTH_RELEASE_POLICY);
    /// else, when the configuration's "identity": {"kubernetes": true}, K8S_POD_NAMESPACE + K8S_POD_NAME of a
    /// StatefulSet pod "<set>-<N>" as app "<namespace>/<set>", ordinal N. The release policy defaults to the
    /// configuration's identity.releasePolicy, else immutable (the address stays with the identity across DEL/ADD).
    static func identity(_ args: [String: String], config: JSON, section: JSON) throws -> JSON? {
        if let id = config["runtimeConfig"]?["identity"], !id.isNull { return id }
        let defaults = section["identity"] ?? .object([])
        let policy = args["BERTH_RELEASE_POLICY"] ?? defaults["releasePolicy"]?.string ?? "immutable"
        func make(_ app: String, _ ord: Int) -> JSON {
            var j: JSON = ["app": .string(app), "ordinal": .number(Double(ord)), "releasePolicy": .string(policy)]
            if let k = defaults["keepSeconds"] { j = j.setting("keepSeconds", k) }
            return j
        }
        if args["BERTH_APP"] != nil || args["BERTH_ORDINAL"] != nil {
            guard let app = args["BERTH_APP"], !app.isEmpty else {
                throw Failure(code: .invalidConfig, msg: "CNI_ARGS has BERTH_ORDINAL but no BERTH_APP", details: "name the identity with both, e.g. BERTH_APP=db;BERTH_ORDINAL=0")
            }
            guard let o = args["BERTH_ORDINAL"], let ord = Int(o), ord >= 0 else {
                throw Failure(code: .invalidConfig, msg: "CNI_ARGS BERTH_ORDINAL \"\(args["BERTH_ORDINAL"] ?? "")\" is not a non-negative integer",
                              details: "name the identity with both, e.g. BERTH_APP=db;BERTH_ORDINAL=0")
            }
            return make(app, ord)
        }
        if defaults["kubernetes"]?.bool == true, let pod = args["K8S_POD_NAME"], let dash = pod.lastIndex(of: "-"),
           let ord = Int(pod[pod.index(after: dash)...]), ord >= 0, dash > pod.startIndex {
            let ns = args["K8S_POD_NAMESPACE"] ?? "default"
            return make("\(ns)/\(pod[..<dash])", ord)
        }
        return nil
    }

    /// The configuration's `ipam` section: an object (absent means all defaults) whose berth-cni keys are strings.
    /// Anything else is refused (code 7) rather than read as the defaults, which would send the call elsewhere.
    static func ipamSection(_ config: JSON) throws -> JSON {
        guard let ipam = config["ipam"] else { return .object([]) }
        guard case .object = ipam else {
            throw Failure(code: .invalidConfig, msg: "the \"ipam\" section of the network configuration must be an object, got \(ipam.typeName)", details: "")
        }
        for k in ["type", "socket", "network", "pool", "node"] {
            if let v = ipam[k], v.string == nil {
                throw Failure(code: .invalidConfig, msg: "ipam.\(k) must be a string, got \(v.typeName)", details: "")
            }
        }
        return ipam
    }

    /// CNI_CONTAINERID and CNI_IFNAME as the spec and Linux want them (not blank, at most 256 bytes, no control
    /// character; an interface name Linux accepts): otherwise code 4, naming the variable.
    static func environmentKey(_ req: JSON) throws -> (String, String) {
        let cid = req["containerID"]?.string ?? "", ifname = req["ifname"]?.string ?? "eth0"
        do { _ = try NetworkService.key(cid, "eth0") } catch let e as BerthError {
            throw Failure(code: .invalidEnvironment, msg: "CNI_CONTAINERID is not valid: \(e.message)", details: "")
        }
        do { try Names.interface(ifname, "CNI_IFNAME") } catch let e as Names.Invalid { throw Failure(code: .invalidEnvironment, msg: e.message, details: "") }
        return try NetworkService.key(cid, ifname)
    }

    /// Requested addresses: runtimeConfig.ips or args.cni.ips win over CNI_ARGS IP=a,b. Each keeps its prefix length
    /// when it has one (berthd refuses one that disagrees with the pool); a malformed one is refused, with code 7 from
    /// the configuration and 4 from CNI_ARGS.
    static func requestedIPs(_ cniArgs: String, _ config: JSON) throws -> [String] {
        func checked(_ list: [String], _ source: String, _ code: Code) throws -> [String] {
            do { _ = try NetworkService.requestedAddresses(.array(list.map { .string($0) })) } catch let e as BerthError {
                throw Failure(code: code, msg: "\(source): \(e.message)", details: "")
            }
            return list
        }
        for (path, v) in [("runtimeConfig.ips", config["runtimeConfig"]?["ips"]), ("args.cni.ips", config["args"]?["cni"]?["ips"])] {
            guard let v, !v.isNull else { continue }
            guard let a = v.array, a.allSatisfy({ $0.string != nil }) else {
                throw Failure(code: .invalidConfig, msg: "\(path) must be an array of addresses (strings)", details: "")
            }
            return try checked(a.map { $0.string! }, path, .invalidConfig)
        }
        for kv in cniArgs.split(separator: ";") {
            let parts = kv.split(separator: "=", maxSplits: 1)
            if parts.count == 2, parts[0] == "IP" { return try checked(parts[1].split(separator: ",").map(String.init), "CNI_ARGS IP", .invalidEnvironment) }
        }
        return []
    }

    /// The IPAM result in the requested version's shape (abbreviated: no interfaces).
    static func format(_ r: JSON, version: String) -> JSON {
        let legacy = version.hasPrefix("0.3") || version == "0.4.0"
        let ips: [JSON] = (r["ips"]?.array ?? []).map { ip in
            var o: JSON = ["address": ip["address"] ?? .null]
            if let gw = ip["gateway"]?.string { o = o.setting("gateway", .string(gw)) }
            if legacy {
                let v6 = (ip["address"]?.string ?? "").contains(":")
                o = o.setting("version", .string(v6 ? "6" : "4"))
            }
            return o
        }
        var out: JSON = ["cniVersion": .string(version), "ips": .array(ips)]
        if let routes = r["routes"]?.array, !routes.isEmpty { out = out.setting("routes", .array(routes)) }
        if let dns = r["dns"], case .object(let kv) = dns, !kv.isEmpty { out = out.setting("dns", dns) }
        return out
    }
}
