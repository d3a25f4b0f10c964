// The workload tables (migration 5): nodes, objects (apps of every kind) and their instances, as plain rows. The
// scheduler's in-memory model (BerthScheduler) is built from these and writes through them; JSON columns are text.

/// One node as the host keeps it; `labels` is a JSON object as text.
public struct NodeRecord: Sendable {
    public var name: String, state: String
    public var cpu: Int64, memory: Int64, disk: Int64, ports: Int64
    public var labels: String
    public var created: Double, updated: Double
    public init(name: String, state: String, cpu: Int64, memory: Int64, disk: Int64, ports: Int64, labels: String, created: Double, updated: Double) {
        self.name = name; self.state = state; self.cpu = cpu; self.memory = memory; self.disk = disk; self.ports = ports
        self.labels = labels; self.created = created; self.updated = updated
    }
}

/// One object (an app of some kind); `spec` is JSON text.
public struct ObjectRecord: Sendable {
    public var kind: String, name: String, spec: String
    public var generation: Int64
    public var created: Double, updated: Double
    public init(kind: String, name: String, spec: String, generation: Int64, created: Double, updated: Double) {
        self.kind = kind; self.name = name; self.spec = spec; self.generation = generation; self.created = created; self.updated = updated
    }
}

/// One instance; `addresses`, `volumes` and `ports` are JSON arrays as text.
public struct InstanceRecord: Sendable {
    public var kind: String, app: String, ordinal: Int64
    public var state: String, node: String, prevNode: String, volumeNode: String
    public var incarnation: Int64, containerID: String, network: String
    public var addresses: String, volumes: String
    public var cpu: Int64, memory: Int64, disk: Int64, ports: String
    public var reason: String, final: Bool
    public var created: Double, updated: Double
    public init(kind: String, app: String, ordinal: Int64, state: String, node: String, prevNode: String, volumeNode: String,
                incarnation: Int64, containerID: String, network: String, addresses: String, volumes: String,
                cpu: Int64, memory: Int64, disk: Int64, ports: String, reason: String, final: Bool, created: Double, updated: Double) {
        self.kind = kind; self.app = app; self.ordinal = ordinal; self.state = state; self.node = node; self.prevNode = prevNode
        self.volumeNode = volumeNode; self.incarnation = incarnation; self.containerID = containerID; self.network = network
        self.addresses = addresses; self.volumes = volumes; self.cpu = cpu; self.memory = memory; self.disk = disk; self.ports = ports
        self.reason = reason; self.final = final; self.created = created; self.updated = updated
    }
}

extension Store {
    /// Every node, by name.
    public func forEachNode(_ body: (NodeRecord) throws -> Void) throws {
        let s = try prepare("SELECT name, state, cpu, memory, disk, ports, labels, created, updated FROM nodes ORDER BY name")
        while try s.step() {
            try body(NodeRecord(name: s.text(0), state: s.text(1), cpu: s.int(2), memory: s.int(3), disk: s.int(4), ports: s.int(5),
                                labels: s.text(6), created: s.double(7), updated: s.double(8)))
        }
    }

    public func saveNode(_ n: NodeRecord) throws {
        let s = try prepare("""
            INSERT OR REPLACE INTO nodes(name, state, cpu, memory, disk, ports, labels, created, updated) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)
            """)
        s.bind(1, n.name); s.bind(2, n.state); s.bind(3, n.cpu); s.bind(4, n.memory); s.bind(5, n.disk)
        s.bind(6, n.ports); s.bind(7, n.labels); s.bind(8, n.created); s.bind(9, n.updated)
        try s.run()
    }

    public func deleteNode(name: String) throws {
        let s = try prepare("DELETE FROM nodes WHERE name=?1")
        s.bind(1, name)
        try s.run()
    }

    /// Every object.
    public func forEachObject(_ body: (ObjectRecord) throws -> Void) throws {
        let s = try prepare("SELECT kind, name, spec, generation, created, updated FROM objects")
        while try s.step() {
            try body(ObjectRecord(kind: s.text(0), name: s.text(1), spec: s.text(2), generation: s.int(3), created: s.double(4), updated: s.double(5)))
        }
    }

    public func saveObject(_ o: ObjectRecord) throws {
        let s = try prepare("INSERT OR REPLACE INTO objects(kind, name, spec, generation, created, updated) VALUES(?1,?2,?3,?4,?5,?6)")
        s.bind(1, o.kind); s.bind(2, o.name); s.bind(3, o.spec); s.bind(4, o.generation); s.bind(5, o.created); s.bind(6, o.updated)
        try s.run()
    }

    public func deleteObject(kind: String, name: String) throws {
        let s = try prepare("DELETE FROM objects WHERE kind=?1 AND name=?2")
        s.bind(1, kind); s.bind(2, name)
        try s.run()
    }

    /// Every instance, in (kind, app, ordinal) order.
    public func forEachInstance(_ body: (InstanceRecord) throws -> Void) throws {
        let s = try prepare("""
            SELECT kind, app, ordinal, state, node, prev_node, volume_node, incarnation, container_id, network, addresses, volumes,
                   cpu, memory, disk, ports, reason, final, created, updated FROM instances ORDER BY kind, app, ordinal
            """)
        while try s.step() {
            try body(InstanceRecord(kind: s.text(0), app: s.text(1), ordinal: s.int(2), state: s.text(3), node: s.text(4), prevNode: s.text(5),
                                    volumeNode: s.text(6), incarnation: s.int(7), containerID: s.text(8), network: s.text(9),
                                    addresses: s.text(10), volumes: s.text(11), cpu: s.int(12), memory: s.int(13), disk: s.int(14),
                                    ports: s.text(15), reason: s.text(16), final: s.int(17) != 0, created: s.double(18), updated: s.double(19)))
        }
    }

    public func saveInstance(_ r: InstanceRecord) throws {
        let s = try prepare("""
            INSERT OR REPLACE INTO instances(kind, app, ordinal, state, node, prev_node, volume_node, incarnation, container_id, network,
                addresses, volumes, cpu, memory, disk, ports, reason, final, created, updated)
            VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19,?20)
            """)
        s.bind(1, r.kind); s.bind(2, r.app); s.bind(3, r.ordinal); s.bind(4, r.state)
        s.bind(5, r.node); s.bind(6, r.prevNode); s.bind(7, r.volumeNode); s.bind(8, r.incarnation); s.bind(9, r.containerID)
        s.bind(10, r.network); s.bind(11, r.addresses); s.bind(12, r.volumes)
        s.bind(13, r.cpu); s.bind(14, r.memory); s.bind(15, r.disk); s.bind(16, r.ports)
        s.bind(17, r.reason); s.bind(18, Int64(r.final ? 1 : 0)); s.bind(19, r.created); s.bind(20, r.updated)
        try s.run()
    }

    public func deleteInstance(kind: String, app: String, ordinal: Int64) throws {
        let s = try prepare("DELETE FROM instances WHERE kind=?1 AND app=?2 AND ordinal=?3")
        s.bind(1, kind); s.bind(2, app); s.bind(3, ordinal)
        try s.run()
    }
}
