// The node API of the workload service: add or update a node (capacity, labels), set its state (up, down,
// draining: instances are evicted), list and remove nodes.
import BerthKinds
import BerthPlugins
import BerthStore
import BerthWire
import Foundation

extension WorkloadService {
    // MARK: nodes

    static func checkNodeName(_ n: String) throws {
        guard !n.isEmpty, n.utf8.count <= 253, Pattern.matches("^[a-z0-9][a-z0-9.-]*$", n) else {
            throw BerthError(.invalidArgument, "node name \"\(n)\" is not valid: 1-253 characters of a-z, 0-9, '.', '-', starting with a letter or digit")
        }
    }

    func nodeJSON(_ i: Int) -> JSON {
        let n = state.nodes[i], h = state.hot[i]
        return ["name": .string(n.name), "state": .string(n.state.rawValue),
                "capacity": ["cpu": .number(Double(h.cpuCap)), "memory": .number(Double(h.memCap)), "disk": .number(Double(h.diskCap)),
                             "ports": .number(Double(h.portsCap))],
                "allocated": ["cpu": .number(Double(h.cpuUsed)), "memory": .number(Double(h.memUsed)), "disk": .number(Double(h.diskUsed)),
                              "ports": .number(Double(h.portsUsed)), "instances": .number(Double(n.instances))],
                "labels": .object(n.labels.map { ($0.0, .string($0.1)) }), "created": .number(n.created), "updated": .number(n.updated)]
    }

    public func listNodes() async throws -> JSON {
        try await tx { ["nodes": .array(self.state.nodes.indices.map { self.nodeJSON($0) })] }
    }

    public func getNode(_ name: String) async throws -> JSON {
        try await tx {
            guard let i = self.state.nodeIndex[name] else { throw BerthError(.notFound, "no node named \"\(name)\"") }
            return self.nodeJSON(i)
        }
    }

    /// Adds or updates a node: {capacity: {cpu, memory, disk, ports}, labels: {k: v}, state?}.
    public func putNode(_ name: String, _ body: JSON) async throws -> (JSON, Bool) {
        try Self.checkNodeName(name)
        let r = try await tx { try self.putNodeInTransaction(name, body) }
        kick()
        return r
    }

    package func putNodeSync(_ name: String, _ body: JSON) throws {
        try Self.checkNodeName(name)
        _ = try txSync { try self.putNodeInTransaction(name, body) }
    }

    func putNodeInTransaction(_ name: String, _ body: JSON) throws -> (JSON, Bool) {
        let allowed: Set<String> = ["name", "kind", "capacity", "labels", "state"]
        if let unknown = body.keys.first(where: { !allowed.contains($0) }) {
            throw BerthError(.invalidArgument, "unknown field \"\(unknown)\" in node \(name) (allowed: capacity, labels, state)")
        }
        if let n = body["name"]?.string, n != name { throw BerthError(.invalidArgument, "name \"\(n)\" in the body does not match the path's \"\(name)\"") }
        let cap = body["capacity"] ?? .object([])
        guard case .object = cap else { throw BerthError(.invalidArgument, "capacity must be an object {cpu, memory, disk, ports}") }
        if let unknown = cap.keys.first(where: { !["cpu", "memory", "disk", "ports"].contains($0) }) {
            throw BerthError(.invalidArgument, "capacity.\(unknown): unknown key (allowed: cpu, memory, disk, ports)")
        }
        let cpu = try Quantity.cpu(cap["cpu"], "capacity.cpu")
        let mem = try Quantity.bytes(cap["memory"], "capacity.memory")
        let disk = try Quantity.bytes(cap["disk"], "capacity.disk")
        var ports: Int64 = 1000
        if let p = cap["ports"], !p.isNull {
            guard let v = p.int, v >= 0, v <= 65535 else { throw BerthError(.invalidArgument, "capacity.ports must be an integer 0..65535 (how many host ports instances may use)") }
            ports = Int64(v)
        }
        var labels: [(String, String)] = []
        if let l = body["labels"], !l.isNull {
            guard let o = l.object else { throw BerthError(.invalidArgument, "labels must be an object of strings") }
            for (k, v) in o {
                guard let s = v.string else { throw BerthError(.invalidArgument, "labels.\(k): expected a string, got \(v.typeName)") }
                guard !k.isEmpty, k.utf8.count <= 63, s.utf8.count <= 63 else { throw BerthError(.invalidArgument, "labels.\(k): keys and values are at most 63 bytes") }
                labels.append((k, s))
            }
        }
        var newState: NodeState?
        if let s = body["state"]?.string {
            guard let ns = NodeState(rawValue: s) else { throw BerthError(.invalidArgument, "state \"\(s)\" must be up, down or draining") }
            newState = ns
        }
        let now = wallClock()
        let st = state
        let created: Bool
        if let i = st.nodeIndex[name] {
            created = false
            let n = st.nodes[i]
            var h = st.hot[i]
            h.cpuCap = cpu; h.memCap = mem; h.diskCap = disk; h.portsCap = Int32(ports)
            n.updated = now
            let oldLabels = n.labels
            n.setLabels(labels)
            h.zone = st.zoneID(n.labelMap)
            h.clabels = n.clabels
            h.labelCount = UInt32(n.labels.count)
            try st.saveNode(n, h)
            st.mutated = true
            st.hot[i] = h
            if oldLabels.map({ "\($0.0)=\($0.1)" }) != n.labels.map({ "\($0.0)=\($0.1)" }) && n.instances > 0 {
                st.dirty = true  // zone counts of placed instances follow the new labels: rebuild after this transaction
            }
        } else {
            created = true
            let n = NodeInfo(name: name, state: newState ?? .up, labels: labels, created: now, updated: now)
            let h = NodeHot(up: n.state == .up, zone: st.zoneID(n.labelMap), cpuCap: cpu, memCap: mem, diskCap: disk, portsCap: Int32(ports),
                            cname: n.cname, clabels: n.clabels, labelCount: UInt32(n.labels.count))
            try st.saveNode(n, h)
            st.mutated = true
            st.nodeIndex[name] = st.nodes.count
            st.nodes.append(n)
            st.hot.append(h)
        }
        host.executor.noteEvent(try store.appendEvent(type: created ? "node.added" : "node.updated", subject: name,
                                                         data: ["capacity": ["cpu": .number(Double(cpu)), "memory": .number(Double(mem)),
                                                                             "disk": .number(Double(disk)), "ports": .number(Double(ports))],
                                                                "labels": .object(labels.map { ($0.0, .string($0.1)) })]))
        st.nodesGen &+= 1
        st.generation &+= 1
        if !created, let ns = newState { _ = try setNodeStateInTransaction(name, ns) }
        return (nodeJSON(st.nodeIndex[name]!), created)
    }

    var store: any HostStore { host.store }

    /// up, down (lost: its instances are rescheduled) or draining (no new instances; its instances are moved).
    public func setNodeState(_ name: String, _ s: NodeState) async throws -> JSON {
        let r = try await tx { try self.setNodeStateInTransaction(name, s) }
        kick()
        return r
    }

    func setNodeStateInTransaction(_ name: String, _ s: NodeState) throws -> JSON {
        let st = state
        guard let i = st.nodeIndex[name] else { throw BerthError(.notFound, "no node named \"\(name)\"") }
        let n = st.nodes[i]
        var evicted = 0
        if n.state != s {
            n.state = s
            n.updated = wallClock()
            st.hot[i].up = s == .up
            try st.saveNode(n, st.hot[i])
            st.mutated = true
            host.executor.noteEvent(try store.appendEvent(type: "node.\(s.rawValue)", subject: name))
            st.generation &+= 1
        }
        if s != .up { evicted = try st.evict(node: name, reason: "node \(name) is \(s.rawValue)") }
        return nodeJSON(i).setting("evicted", .number(Double(evicted)))
    }

    /// Removes a node that runs nothing.
    public func deleteNode(_ name: String) async throws {
        try await tx {
            let st = self.state
            guard let i = st.nodeIndex[name] else { throw BerthError(.notFound, "no node named \"\(name)\"") }
            let busy = st.objects.values.flatMap { $0.instances.values }.filter { $0.node == name && $0.state != .pending }
            if !busy.isEmpty {
                throw BerthError(.failedPrecondition, "node \(name) still has \(busy.count) instance(s) (\(busy.prefix(3).map { $0.key.subject }.joined(separator: ", "))); mark it down or drain it first")
            }
            _ = i
            try self.store.deleteNode(name: name)
            self.host.executor.noteEvent(try self.store.appendEvent(type: "node.removed", subject: name))
            st.dirty = true  // node indexes shift: rebuild the model after this transaction
        }
    }

}
