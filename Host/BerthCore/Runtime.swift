// The composition root: the plugin host and one coordinator per kind, each built from what its registration
// declares it requires (the way containerd's plugin registrations declare Requires), in the order those declarations give.
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthWire
import Logging

/// One part of the daemon: its id, the ids of the parts it is built from, and how to build it from them.
struct Registration {
    let id: String
    let requires: [String]
    let build: (Parts) throws -> AnyObject
}

/// The parts built so far, by id; a registration reads only what it declared in `requires`.
final class Parts {
    private var byID: [String: AnyObject] = [:]
    func put(_ id: String, _ part: AnyObject) { byID[id] = part }
    func get<T>(_ id: String, _: T.Type = T.self) -> T {
        guard let p = byID[id] as? T else { preconditionFailure("part \"\(id)\" is not built or not a \(T.self): declare it in requires") }
        return p
    }

    /// The registrations in an order where each comes after everything it requires (stable: ties keep the
    /// listed order). Throws on a requirement nobody registers or on a cycle.
    static func order(_ regs: [Registration], given: Set<String>) throws -> [Registration] {
        var done = given, out: [Registration] = [], left = regs
        let known = given.union(regs.map(\.id))
        for r in regs { if let m = r.requires.first(where: { !known.contains($0) }) { throw BerthError(.internal, "part \"\(r.id)\" requires \"\(m)\", which nothing provides") } }
        while !left.isEmpty {
            guard let i = left.firstIndex(where: { $0.requires.allSatisfy(done.contains) }) else {
                throw BerthError(.internal, "parts \(left.map(\.id).joined(separator: ", ")) require each other")
            }
            let r = left.remove(at: i)
            out.append(r)
            done.insert(r.id)
        }
        return out
    }
}

/// Settings of the coordinators that are not in the site file (berthd runs with the defaults).
public struct CoordinatorSettings: Sendable {
    public var discovery = DiscoverySettings()
    public var scheduler = SchedulerSettings()
    public init() {}
}

/// The daemon: a plugin host and the coordinators of every kind. The API layer (BerthServer) and the CLI are thin
/// shells around it.
public final class BerthRuntime: @unchecked Sendable {
    public let host: PluginHost
    public let network: NetworkService
    public let storage: StorageService
    public let workloads: WorkloadService
    public let discovery: DiscoveryService
    /// The node agent: runs what is placed on this node (BerthKinds/Runtime).
    public let agent: NodeAgent
    let compactor: EventCompactor
    /// This berthd as a member of its site in cluster mode (nil on one host).
    public let cluster: ClusterMember?

    /// Every part, with what it requires. The plugin host ("plugins") is given.
    static let registrations: [Registration] = [
        Registration(id: "network", requires: ["plugins"]) { p in NetworkService(host: p.get("plugins")) },
        Registration(id: "storage", requires: ["plugins"]) { p in StorageService(host: p.get("plugins")) },
        Registration(id: "scheduler", requires: ["plugins"]) { p in SchedulerCoordinator(host: p.get("plugins")) },
        Registration(id: "workloads", requires: ["plugins", "network", "storage", "scheduler", "settings"]) { p in
            WorkloadService(host: p.get("plugins"), network: p.get("network"), storage: p.get("storage"), scheduler: p.get("scheduler"),
                            settings: p.get("settings", Box<CoordinatorSettings>.self).value.scheduler)
        },
        Registration(id: "discovery", requires: ["plugins", "workloads", "settings"]) { p in
            let w: WorkloadService = p.get("workloads")
            return DiscoveryService(host: p.get("plugins"), snapshotPage: { [unowned w] after, limit in try w.snapshotPage(after: after, limit: limit) },
                                    settings: p.get("settings", Box<CoordinatorSettings>.self).value.discovery)
        },
        Registration(id: "agent", requires: ["plugins", "workloads"]) { p in
            let h: PluginHost = p.get("plugins")
            let w: WorkloadService = p.get("workloads")
            let node = h.site.nodeName
            let agent = NodeAgent(host: h, desired: { [unowned w] in try w.runsOnNode(node) },
                                  reportRunning: { [unowned w] r in try w.reportRunningSync(kind: r.kind, app: r.app, ordinal: r.ordinal) })
            w.runtimeView.set { [unowned agent] id in agent.status(containerID: id) }
            return agent
        },
        Registration(id: "cluster", requires: ["plugins", "workloads"]) { p in
            Box(ClusterMember(host: p.get("plugins"), workloads: p.get("workloads")))
        },
        Registration(id: "events.retention", requires: ["plugins"]) { p in
            let h: PluginHost = p.get("plugins")
            let log = h.logger
            return EventCompactor(store: h.store, executor: h.executor, retention: { [unowned h] in (h.site.eventsRetain, h.site.eventsMaxAgeSeconds) },
                                  warn: { log.warning("\($0)") })
        },
    ]

    public init(site: SiteConfig, logger: Logger = Logger(label: "berthd"), settings: CoordinatorSettings = CoordinatorSettings()) throws {
        host = try PluginHost(site: site, logger: logger)
        let parts = Parts()
        parts.put("plugins", host)
        parts.put("settings", Box(settings))
        for r in try Parts.order(Self.registrations, given: ["plugins", "settings"]) { parts.put(r.id, try r.build(parts)) }
        network = parts.get("network")
        storage = parts.get("storage")
        workloads = parts.get("workloads")
        discovery = parts.get("discovery")
        agent = parts.get("agent")
        compactor = parts.get("events.retention")
        cluster = parts.get("cluster", Box<ClusterMember?>.self).value
    }

    /// Loads every enabled plugin (a plugin that fails is recorded as failed with its reason; the rest go on).
    public func loadPlugins() { host.loadPlugins() }

    /// Starts the scheduler loop and event delivery to discovery plugins (after `loadPlugins()`).
    public func start() {
        workloads.start()
        discovery.start()
        agent.start()
        cluster?.start()
    }

    // The host's state, for the API layer and the CLI.
    public var site: SiteConfig { host.site }
    public var siteFile: String? {
        get { host.siteFile }
        set { host.siteFile = newValue }
    }
    public var store: any HostStore { host.store }
    /// The engine and where it keeps the state (SQLite: the file; etcd: the endpoints and the key prefix), for /healthz
    /// and `berth status`.
    public var storeStatus: JSON {
        if let sqlite = store as? Store { return ["engine": "sqlite", "path": .string(sqlite.path)] }
        if let etcd = store as? EtcdStore {
            return ["engine": "etcd", "endpoints": .array(etcd.settings.endpoints.map { .string($0) }), "prefix": .string(etcd.prefix)]
        }
        return ["engine": .string(store.engineName)]
    }

    /// /healthz's store section with, in cluster mode, this node, the scheduling leader and the members.
    public func storeStatusWithCluster() -> JSON {
        guard let cluster else { return storeStatus }
        return storeStatus.setting("cluster", cluster.status())
    }
    public var executor: Executor { host.executor }
    public var loader: Loader { host.loader }
    public var logger: Logger {
        get { host.logger }
        set { host.logger = newValue }
    }
    public var startedAt: Double { host.startedAt }
    public var plugins: [PluginEntry] { host.plugins }
    public func entry(_ name: String) -> PluginEntry? { host.entry(name) }
    public func instance(_ name: String, kind: PluginKinds) throws -> PluginInstance { try host.instance(name, kind: kind) }
    public func events(since: Int64, limit: Int = 1000, wait: Double = 0, type: String? = nil, subject: String? = nil) async throws -> [Event] {
        try await host.events(since: since, limit: limit, wait: wait, type: type, subject: subject)
    }
    public func record(type: String, subject: String, actor: String = "berthd", data: JSON = .object([])) async throws {
        try await host.record(type: type, subject: subject, actor: actor, data: data)
    }
    public func apply(_ new: SiteConfig, actor: String, force: Bool = false, dryRun: Bool = false) throws -> [PlannedChange] {
        try host.apply(new, actor: actor, force: force, dryRun: dryRun)
    }
    public func setEnabled(_ name: String, _ enabled: Bool, actor: String, force: Bool) throws -> [PlannedChange] {
        try host.setEnabled(name, enabled, actor: actor, force: force)
    }
    public func reload(_ name: String, actor: String) throws -> [PlannedChange] { try host.reload(name, actor: actor) }

    /// Every counter and gauge of the host and its coordinators, in the Prometheus text format.
    public func metricsText() -> String {
        host.metricsText() + network.metricsText() + compactor.metricsText + discovery.metricsText() + agent.metricsText()
    }

    /// Stops the coordinators whose work runs on the executor, then the host (executor, plugin instances).
    public func shutdown() {
        cluster?.stop()  // first: another berthd takes the scheduling over now (resigned), not after the lease's TTL
        agent.stop()
        workloads.stop()
        compactor.stop()  // before the executor: its steps run there
        discovery.stop()
        host.shutdown()
    }
}

/// A value type carried among the parts.
final class Box<T> {
    let value: T
    init(_ value: T) { self.value = value }
}
