// Workload specs: the fields of any kind's spec that the host itself interprets, their schema, and quantities.
// Conventions every kind shares (the host reads them from any kind's spec): replicas, reservedOrdinals,
// resources {cpu, memory, disk}, ports, network {name, releasePolicy, pool, keepSeconds}, volumes
// [{name, size, storage, local, parameters}], nodeSelector {label: value}, constraints [{key, operator, values}].
// Object names are DNS labels and unique across kinds (they name network identities, volumes and DNS records).
import BerthKinds
import BerthWire
import Foundation

// MARK: - quantities

enum Quantity {
    /// CPU in millicores: an integer is millicores; a string is "500m" (millicores) or "2" / "1.5" (cores).
    static func cpu(_ v: JSON?, _ path: String) throws -> Int64 {
        guard let v, !v.isNull else { return 0 }
        if let i = v.int, i >= 0 { return Int64(i) }
        if let s = v.string?.trimmingCharacters(in: .whitespaces) {
            if s.hasSuffix("m"), let m = Int64(s.dropLast()), m >= 0 { return m }
            if let c = Double(s), c >= 0, c < 1e12 { return Int64((c * 1000).rounded()) }
        }
        throw BerthError(.invalidArgument, "\(path): \(v.serialized) is not a CPU quantity (millicores as an integer, or \"500m\", or cores as \"2\")")
    }

    /// Bytes: an integer, or a string with a suffix Ki, Mi, Gi, Ti (powers of 1024) or K, M, G, T (powers of 1000).
    static func bytes(_ v: JSON?, _ path: String) throws -> Int64 {
        guard let v, !v.isNull else { return 0 }
        if let i = v.int, i >= 0 { return Int64(i) }
        if let s = v.string?.trimmingCharacters(in: .whitespaces) {
            let units: [(String, Double)] = [("Ki", 1024), ("Mi", 1_048_576), ("Gi", 1_073_741_824), ("Ti", 1_099_511_627_776),
                                             ("K", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)]
            for (u, f) in units where s.hasSuffix(u) {
                if let n = Double(s.dropLast(u.count)), n >= 0, n * f < 9e18 { return Int64(n * f) }
            }
            if let n = Int64(s), n >= 0 { return n }
        }
        throw BerthError(.invalidArgument, "\(path): \(v.serialized) is not a size (bytes as an integer, or a string such as \"512Mi\" or \"10Gi\")")
    }
}

// MARK: - workload specs

struct VolumeTemplate {
    var name: String
    var size: Int64
    var storage: String?
    var local: Bool
    var parameters: JSON
}

struct NetworkRef {
    var name: String
    var releasePolicy: String
    var pool: String?
    var keepSeconds: Int?
}

struct LabelConstraint {
    var key: String
    var op: String      // In, NotIn, Exists, DoesNotExist
    var values: [String]
    func matches(_ labels: [String: String]) -> Bool {
        let v = labels[key]
        switch op {
        case "In": return v.map { values.contains($0) } ?? false
        case "NotIn": return v.map { !values.contains($0) } ?? true
        case "Exists": return v != nil
        default: return v == nil
        }
    }
}

/// The fields of a spec that the host itself interprets, for every kind.
struct WorkloadSpec {
    /// Most instances one app may have (`replicas` plus the skipped reservedOrdinals): every instance is a row, an
    /// event, memory in the scheduler's model and an entry in each discovery resync. Larger: split the app.
    static let maxReplicas = 10_000
    var replicas = 0
    var reserved: Set<Int> = []
    var cpu: Int64 = 0, memory: Int64 = 0, disk: Int64 = 0
    var ports: [Int] = []
    var network: NetworkRef?
    var volumes: [VolumeTemplate] = []
    var constraints: [LabelConstraint] = []
    /// What each instance runs on its node (RunSpec.swift); nil: instances are only placed.
    var run: RunSpec?

    /// The ordinals that should exist: the first `replicas` non-negative integers not in reservedOrdinals.
    var ordinals: [Int] {
        var out: [Int] = []
        out.reserveCapacity(replicas)
        var o = 0
        while out.count < replicas {
            if !reserved.contains(o) { out.append(o) }
            o += 1
        }
        return out
    }

    /// The ordinal an OrderedReady instance waits for: the next lower one that exists.
    func predecessor(of ordinal: Int) -> Int? {
        var o = ordinal - 1
        while o >= 0 {
            if !reserved.contains(o) { return o }
            o -= 1
        }
        return nil
    }

    func matches(_ labels: [String: String]) -> Bool { constraints.allSatisfy { $0.matches(labels) } }

    static func parse(_ spec: JSON) throws -> WorkloadSpec {
        var w = WorkloadSpec()
        w.replicas = spec["replicas"]?.int ?? 0
        w.reserved = Set((spec["reservedOrdinals"]?.array ?? []).compactMap { $0.int })
        let r = spec["resources"]
        w.cpu = try Quantity.cpu(r?["cpu"], "spec.resources.cpu")
        w.memory = try Quantity.bytes(r?["memory"], "spec.resources.memory")
        w.disk = try Quantity.bytes(r?["disk"], "spec.resources.disk")
        w.ports = (spec["ports"]?.array ?? []).compactMap { $0.int }
        if Set(w.ports).count != w.ports.count { throw BerthError(.invalidArgument, "spec.ports: a host port is listed twice") }
        if let n = spec["network"], let name = n["name"]?.string {
            w.network = NetworkRef(name: name, releasePolicy: n["releasePolicy"]?.string ?? "onDelete", pool: n["pool"]?.string,
                                   keepSeconds: n["keepSeconds"]?.int)
        }
        w.run = try RunSpec.parse(spec["run"])
        var seen = Set<String>()
        for (i, v) in (spec["volumes"]?.array ?? []).enumerated() {
            let name = v["name"]?.string ?? ""
            guard seen.insert(name).inserted else { throw BerthError(.invalidArgument, "spec.volumes[\(i)].name: \"\(name)\" is used twice") }
            w.volumes.append(VolumeTemplate(name: name, size: try Quantity.bytes(v["size"], "spec.volumes[\(i)].size"),
                                            storage: v["storage"]?.string, local: v["local"]?.bool ?? false,
                                            parameters: v["parameters"] ?? .object([])))
        }
        for (k, v) in spec["nodeSelector"]?.object ?? [] {
            w.constraints.append(LabelConstraint(key: k, op: "In", values: [v.string ?? ""]))
        }
        for c in spec["constraints"]?.array ?? [] {
            let op = c["operator"]?.string ?? "In"
            let values = (c["values"]?.array ?? []).compactMap { $0.string }
            if (op == "In" || op == "NotIn") && values.isEmpty {
                throw BerthError(.invalidArgument, "spec.constraints: operator \(op) on \"\(c["key"]?.string ?? "")\" needs a non-empty values list")
            }
            w.constraints.append(LabelConstraint(key: c["key"]?.string ?? "", op: op, values: values))
        }
        return w
    }

    /// The schema of the fields every kind shares; the built-in App's schema is this one, closed.
    static let commonProperties = #"""
    {
      "replicas": {"type": "integer", "minimum": 0, "maximum": 10000, "description": "How many instances (ordinals 0..N-1, reserved ones skipped); at most 10,000 per app."},
      "reservedOrdinals": {"type": "array", "maxItems": 1000, "items": {"type": "integer", "minimum": 0}},
      "resources": {"type": "object", "additionalProperties": false, "properties": {
        "cpu": {"type": ["integer", "string"], "description": "millicores (integer) or \"500m\" / \"2\""},
        "memory": {"type": ["integer", "string"], "description": "bytes or \"512Mi\""},
        "disk": {"type": ["integer", "string"], "description": "bytes or \"10Gi\""}}},
      "ports": {"type": "array", "maxItems": 64, "items": {"type": "integer", "minimum": 1, "maximum": 65535}, "description": "host ports each instance needs"},
      "network": {"type": "object", "additionalProperties": false, "required": ["name"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 63, "description": "a network plugin instance"},
        "releasePolicy": {"enum": ["onDelete", "immutable", "never"]},
        "pool": {"type": "string", "minLength": 1, "maxLength": 63},
        "keepSeconds": {"type": "integer", "minimum": 0}}},
      "volumes": {"type": "array", "maxItems": 16, "items": {"type": "object", "additionalProperties": false, "required": ["name"], "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 40, "pattern": "^[a-z0-9][a-z0-9-]*$"},
        "size": {"type": ["integer", "string"]},
        "storage": {"type": "string", "minLength": 1, "maxLength": 63, "description": "a storage plugin instance (default: the only one loaded)"},
        "local": {"type": "boolean", "description": "create the volume on the instance's node only (node-local)"},
        "parameters": {"type": "object"}}}},
      "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
      "constraints": {"type": "array", "maxItems": 32, "items": {"type": "object", "additionalProperties": false, "required": ["key", "operator"], "properties": {
        "key": {"type": "string", "minLength": 1},
        "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
        "values": {"type": "array", "items": {"type": "string"}}}}},
      "description": {"type": "string", "maxLength": 1024},
      \#(RunSpec.schemaProperty)
    }
    """#

    /// Validates the shared fields of any kind's spec (unknown keys belong to the kind).
    static let commonSchema: JSON = ["type": "object", "properties": try! JSON.parse(commonProperties)]
    /// The built-in App: the shared fields and nothing else; replicas required.
    static let appSchema: JSON = ["type": "object", "additionalProperties": false, "required": ["replicas"],
                                  "properties": try! JSON.parse(commonProperties)]
}


extension VolumeTemplate {
    /// This template for one instance, as the storage coordinator takes it.
    func volume(app: String, ordinal: Int) -> TemplateVolume {
        TemplateVolume(app: app, ordinal: ordinal, name: name, size: size, storage: storage, local: local, parameters: parameters)
    }
}
