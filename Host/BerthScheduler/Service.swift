// The workload service: the API of apps (objects of every kind) and instances: apply, delete, scale, report
// running, discovery's snapshots; its transactions on the executor. Nodes are in Nodes.swift, the loop in Loop.swift.
import BerthKinds
import BerthPlugins
import BerthStore
import BerthPluginABI
import BerthWire
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What the scheduler is configured with (injected through the composition root).
public struct SchedulerSettings: Sendable {
    /// Network wiring (ADD/DEL) on placement; the benchmark measures the core with it off.
    public var wireNetworks = true
    public init(wireNetworks: Bool = true) { self.wireNetworks = wireNetworks }
}

/// Nodes, apps and instances for the API, the CLI and the benchmark; owns the scheduler loop.
public final class WorkloadService: @unchecked Sendable {
    public let host: PluginHost
    let state: WorkloadState
    let scheduler: Scheduler
    /// The scheduler kind's coordinator: which plugin owns which kind.
    let schedulerKinds: SchedulerCoordinator
    var mutex = pthread_mutex_t()
    var cond = pthread_cond_t()
    var kicked = false
    var looping = false
    var stopping = false
    var loopDone = false
    /// Runs scheduling passes (Loop.swift, setLeading).
    var leading = true
    /// The node agent's view of the instances it runs (set by the composition root).
    public let runtimeView = RuntimeView()

    /// Requires the plugin host and the network, storage and scheduler-kind coordinators (a placement wires addresses
    /// and volumes, and asks a custom kind's plugin); registers the live-state probe of scheduler plugins. The
    /// scheduler loop starts with `start()`.
    public init(host: PluginHost, network: NetworkService, storage: StorageService, scheduler kinds: SchedulerCoordinator,
                settings: SchedulerSettings = SchedulerSettings()) {
        self.host = host
        state = WorkloadState(host: host)
        schedulerKinds = kinds
        scheduler = Scheduler(state: state, network: network, storage: storage, kinds: kinds, settings: settings)
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&cond, nil)
        let store = host.store
        host.liveStateProbes.append { [weak host] name in
            // A scheduler plugin holds live state while objects of its kind exist.
            guard let kind = host?.entry(name)?.instance?.plugin.schedulerKind else { return (0, "") }
            return (try store.objectCount(kind: kind), "\(kind) objects")
        }
    }

    /// Starts the scheduler loop. Call after the plugins are loaded.
    public func start() { startLoop() }

    // MARK: transactions

    /// Runs `body` on the executor in a transaction, with the model loaded; marks the model dirty when a failure
    /// may have left it ahead of the store.
    func tx<T>(_ body: @escaping () throws -> T) async throws -> T {
        do { return try await host.executor.run(guarded(body)) } catch { throw failed(error) }
    }

    /// The blocking form (benchmark, tests, the scheduler loop).
    package func txSync<T>(_ body: @escaping () throws -> T) throws -> T {
        do { return try host.executor.runSync(guarded(body)) } catch { throw failed(error) }
    }

    /// `body` with the model loaded first; a failure after it changed the model marks the model dirty.
    private func guarded<T>(_ body: @escaping () throws -> T) -> () throws -> T {
        let st = state
        return {
            try st.ensureLoaded()
            st.mutated = false
            do {
                let r = try body()
                try st.noteOwnWrites()
                return r
            } catch {
                if st.mutated { st.dirty = true }
                throw error
            }
        }
    }

    /// A transaction that failed other than by the host's own refusal (a plugin's error, a failed commit): reload the
    /// model before its next use. A refusal of the host comes before anything changed: the model is intact.
    private func failed(_ error: Error) -> Error {
        if (error as? BerthError)?.plugin != nil || !(error is BerthError) { state.dirty = true }
        return error
    }

    // MARK: kinds

    /// The built-in App and every custom kind of a loaded scheduler plugin (the first plugin to claim a kind owns it).
    func kinds() -> [KindInfo] { schedulerKinds.kinds(appSchema: WorkloadSpec.appSchema) }

    public func kindsJSON() -> JSON {
        ["kinds": .array(kinds().map { k in
            ["kind": .string(k.kind), "owner": .string(k.plugin.map { "plugin \($0)" } ?? "berthd (built-in)"), "schema": k.schema ?? .null]
        })]
    }

    func kindInfo(_ kind: String) throws -> KindInfo {
        let ks = kinds()
        guard let k = ks.first(where: { $0.kind == kind }) else {
            throw BerthError(.notFound, "no kind \"\(kind)\": nothing owns it (known kinds: \(ks.map { $0.kind }.joined(separator: ", "))); a custom kind comes from a loaded scheduler plugin")
        }
        return k
    }

    // MARK: objects

    static func checkObjectName(_ n: String) throws {
        guard !n.isEmpty, n.utf8.count <= 63, Pattern.matches("^[a-z0-9][a-z0-9-]*$", n), !n.hasSuffix("-") else {
            throw BerthError(.invalidArgument, "name \"\(n)\" is not valid: 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit")
        }
    }

    func objectJSON(_ o: ObjectRec) -> JSON {
        var counts: [InstanceState: Int] = [:]
        for r in o.instances.values { counts[r.state, default: 0] += 1 }
        let owner = kinds().first { $0.kind == o.kind }?.plugin
        return ["kind": .string(o.kind), "name": .string(o.name), "spec": o.spec, "generation": .number(Double(o.generation)),
                "owner": .string(owner.map { "plugin \($0)" } ?? (o.kind == "App" ? "berthd (built-in)" : "none loaded")),
                "created": .number(o.created), "updated": .number(o.updated),
                "status": ["replicas": .number(Double(o.model.replicas)), "pending": .number(Double(counts[.pending] ?? 0)),
                           "placed": .number(Double(counts[.placed] ?? 0)), "running": .number(Double(counts[.running] ?? 0)),
                           "terminating": .number(Double(counts[.terminating] ?? 0))]]
    }

    public func listObjects(kind: String) async throws -> JSON {
        let known = kinds().map { $0.kind }
        return try await tx {
            let objs = self.state.objects.values.filter { $0.kind == kind && !$0.deleted }.sorted { $0.name < $1.name }
            if objs.isEmpty && !known.contains(kind) {
                throw BerthError(.notFound, "no kind \"\(kind)\" (known kinds: \(known.joined(separator: ", ")))")
            }
            return ["kind": .string(kind), "items": .array(objs.map { self.objectJSON($0) })]
        }
    }

    public func getObject(kind: String, name: String) async throws -> JSON {
        let known = kinds().map { $0.kind }
        return try await tx {
            guard let o = self.state.objects[ObjectKey(kind: kind, name: name)], !o.deleted else {
                if !known.contains(kind) { throw BerthError(.notFound, "no kind \"\(kind)\" (known kinds: \(known.joined(separator: ", ")))") }
                throw BerthError(.notFound, "no \(kind) named \"\(name)\"")
            }
            return self.objectJSON(o)
        }
    }

    /// Validates a spec for its kind: the kind's own schema (App's, or the plugin's kind_schema), then the
    /// shared fields. Errors name the key.
    func validate(kind: KindInfo, name: String, spec: JSON) throws -> WorkloadSpec {
        guard case .object = spec else { throw BerthError(.invalidArgument, "spec must be an object, got \(spec.typeName)") }
        // Every problem, each once: the kind's schema, the shared fields (a plugin's kind), replicas.
        var errs: [SchemaError] = []
        if let s = kind.schema { errs = Schema.validate(spec, against: s, path: "spec") }
        if kind.plugin != nil {
            for e in Schema.validate(spec, against: WorkloadSpec.commonSchema, path: "spec") where !errs.contains(where: { $0.description == e.description }) {
                errs.append(e)
            }
        }
        if spec["replicas"]?.int == nil && !errs.contains(where: { $0.path == "spec.replicas" }) {
            errs.append(SchemaError(path: "spec.replicas", reason: "is required (an integer)"))
        }
        // Checked before the schemas: a kind's own schema may allow more, and this says what to do.
        if let n = spec["replicas"]?.int, n > WorkloadSpec.maxReplicas {
            throw BerthError(.invalidArgument, "invalid \(kind.kind) \"\(name)\": spec.replicas is \(n), more than the \(WorkloadSpec.maxReplicas) instances one app may have; split it into several apps")
        }
        if !errs.isEmpty {
            throw BerthError(.invalidArgument, "invalid \(kind.kind) \"\(name)\": " + errs.map { $0.description }.joined(separator: "; "),
                           details: ["problems": .array(errs.map { .string($0.description) })])
        }
        let model = try WorkloadSpec.parse(spec)
        try model.run?.checkOnNode()
        if let n = model.network {
            let nets = host.plugins.filter { $0.instance?.plugin.kinds.contains(.network) ?? false }.map { $0.spec.name }
            guard nets.contains(n.name) else {
                throw BerthError(.invalidArgument, "spec.network.name: no loaded network plugin named \"\(n.name)\"" + (nets.isEmpty ? "" : " (have: \(nets.joined(separator: ", ")))"))
            }
        }
        if !model.volumes.isEmpty {
            let stores = host.plugins.filter { $0.instance?.plugin.kinds.contains(.storage) ?? false }.map { $0.spec.name }
            for (i, v) in model.volumes.enumerated() {
                if let s = v.storage {
                    guard stores.contains(s) else {
                        throw BerthError(.invalidArgument, "spec.volumes[\(i)].storage: no loaded storage plugin named \"\(s)\"" + (stores.isEmpty ? "" : " (have: \(stores.joined(separator: ", ")))"))
                    }
                } else if stores.count != 1 {
                    throw BerthError(.invalidArgument, "spec.volumes[\(i)].storage is required: " + (stores.isEmpty ? "no storage plugin is loaded" : "several storage plugins are loaded (\(stores.joined(separator: ", ")))"))
                }
            }
        }
        return model
    }

    /// Creates or replaces an object. Body: {spec} or {kind, name, spec}. Returns (object, created).
    public func putObject(kind: String, name: String, body: JSON) async throws -> (JSON, Bool) {
        let (k, spec, model) = try prepareObject(kind: kind, name: name, body: body)
        let r = try await tx { try self.putObjectInTransaction(k, name, spec, model) }
        kick()
        return r
    }

    package func putObjectSync(kind: String, name: String, body: JSON) throws {
        let (k, spec, model) = try prepareObject(kind: kind, name: name, body: body)
        _ = try txSync { try self.putObjectInTransaction(k, name, spec, model) }
    }

    func prepareObject(kind: String, name: String, body: JSON) throws -> (KindInfo, JSON, WorkloadSpec) {
        let k = try kindInfo(kind)
        try Self.checkObjectName(name)
        guard case .object = body else { throw BerthError(.invalidArgument, "expected a JSON object {spec} or {kind, name, spec}") }
        if let unknown = body.keys.first(where: { !["kind", "name", "spec"].contains($0) }) {
            throw BerthError(.invalidArgument, "unknown field \"\(unknown)\" (an object is {kind, name, spec})")
        }
        if let bk = body["kind"]?.string, bk != kind { throw BerthError(.invalidArgument, "kind \"\(bk)\" in the body does not match the path's \"\(kind)\"") }
        if let bn = body["name"]?.string, bn != name { throw BerthError(.invalidArgument, "name \"\(bn)\" in the body does not match the path's \"\(name)\"") }
        guard let spec = body["spec"] else { throw BerthError(.invalidArgument, "spec is required") }
        return (k, spec, try validate(kind: k, name: name, spec: spec))
    }

    func putObjectInTransaction(_ k: KindInfo, _ name: String, _ spec: JSON, _ model: WorkloadSpec) throws -> (JSON, Bool) {
        let st = state
        if let other = st.objects.values.first(where: { $0.name == name && $0.kind != k.kind && !$0.deleted }) {
            throw BerthError(.failedPrecondition, "the name \"\(name)\" is taken by \(other.kind) \"\(name)\"; names are unique across kinds (they name addresses, volumes and DNS records)")
        }
        if let gone = st.objects[ObjectKey(kind: k.kind, name: name)], gone.deleted {
            throw BerthError(.failedPrecondition, "\(k.kind) \"\(name)\" is still being deleted (\(gone.instances.count) instance(s) terminating); try again shortly")
        }
        let now = wallClock()
        let key = ObjectKey(kind: k.kind, name: name)
        let created: Bool
        let o: ObjectRec
        if let existing = st.objects[key] {
            created = false
            o = existing
            if o.spec == spec { return (objectJSON(o), false) }
            o.spec = spec
            o.specText = spec.serialized
            o.model = model
            o.generation += 1
            o.updated = now
            o.labelMaskGen = .max
        } else {
            created = true
            o = ObjectRec(kind: k.kind, name: name, spec: spec, model: model, generation: 1, created: now, updated: now)
            st.objects[key] = o
        }
        st.mutated = true
        try st.saveObject(o)
        host.executor.noteEvent(try store.appendEvent(type: created ? "app.created" : "app.updated", subject: "\(k.kind)/\(name)",
                                                         data: ["kind": .string(k.kind), "name": .string(name), "generation": .number(Double(o.generation)),
                                                                "replicas": .number(Double(model.replicas))]))
        st.generation &+= 1
        try st.reconcile(o)
        return (objectJSON(o), created)
    }

    /// Deletes an object: its instances terminate (their network identities and plugin memory are released).
    public func deleteObject(kind: String, name: String) async throws -> JSON {
        let known = kinds().map { $0.kind }
        let r = try await tx {
            let st = self.state
            guard let o = st.objects[ObjectKey(kind: kind, name: name)], !o.deleted else {
                if !known.contains(kind) { throw BerthError(.notFound, "no kind \"\(kind)\" (known kinds: \(known.joined(separator: ", ")))") }
                throw BerthError(.notFound, "no \(kind) named \"\(name)\"")
            }
            o.deleted = true
            st.mutated = true
            try st.deleteObjectRow(o.key)
            self.host.executor.noteEvent(try self.store.appendEvent(type: "app.deleted", subject: "\(kind)/\(name)",
                                                                       data: ["kind": .string(kind), "name": .string(name)]))
            st.generation &+= 1
            let terminating = o.instances.values.filter { $0.state == .placed || $0.state == .running || $0.state == .terminating }.count
            try st.reconcile(o)
            return ["deleted": true, "terminating": .number(Double(terminating))] as JSON
        }
        kick()
        return r
    }

    // MARK: instances

    static func parseKey(_ kind: String, _ app: String, _ ordinal: String) throws -> InstanceKey {
        guard let o = Int(ordinal), o >= 0 else { throw BerthError(.invalidArgument, "ordinal \"\(ordinal)\" must be a non-negative integer") }
        return InstanceKey(kind: kind, app: app, ordinal: o)
    }

    func requireInstance(_ k: InstanceKey) throws -> InstanceRec {
        guard let r = state.instance(k), r.state != .gone else { throw BerthError(.notFound, "no instance \(k.subject)") }
        return r
    }

    /// Instances, optionally filtered by kind, app, node and state.
    public func listInstances(kind: String? = nil, app: String? = nil, node: String? = nil, state want: String? = nil) async throws -> JSON {
        try await tx {
            var out: [JSON] = []
            for o in self.state.objects.values.sorted(by: { $0.key < $1.key }) {
                if let kind, o.kind != kind { continue }
                if let app, o.name != app { continue }
                for r in o.instances.values.sorted(by: { $0.key < $1.key }) {
                    if let node, r.node != node { continue }
                    if let want, r.state.rawValue != want { continue }
                    out.append(self.withRuntime(r))
                }
            }
            return ["instances": .array(out)]
        }
    }

    public func getInstance(kind: String, app: String, ordinal: String) async throws -> JSON {
        let k = try Self.parseKey(kind, app, ordinal)
        return try await tx { self.withRuntime(try self.requireInstance(k)) }
    }

    /// placed -> running (the instance's runtime reports it started). Running again: no change.
    public func reportRunning(kind: String, app: String, ordinal: String) async throws -> JSON {
        let k = try Self.parseKey(kind, app, ordinal)
        let r = try await tx { try self.reportRunningInTransaction(k) }
        kick()
        return r
    }

    package func reportRunningSync(kind: String, app: String, ordinal: Int) throws {
        _ = try txSync { try self.reportRunningInTransaction(InstanceKey(kind: kind, app: app, ordinal: ordinal)) }
        kick()
    }

    func reportRunningInTransaction(_ k: InstanceKey) throws -> JSON {
        let r = try requireInstance(k)
        switch r.state {
        case .running: return r.json
        case .placed:
            try state.transition(r, to: .running)
            return r.json
        default:
            throw BerthError(.failedPrecondition, "instance \(k.subject) is \(r.state.rawValue)\(r.reason.isEmpty ? "" : " (\(r.reason))"); only a placed instance can start running")
        }
    }

    /// Deletes one instance: it terminates, and comes back (pending, then placed by its kind's rules) while its
    /// app still wants its ordinal.
    public func deleteInstance(kind: String, app: String, ordinal: String) async throws -> JSON {
        let k = try Self.parseKey(kind, app, ordinal)
        let r = try await tx { () -> JSON in
            let r = try self.requireInstance(k)
            switch r.state {
            case .placed, .running: try self.state.transition(r, to: .terminating, reason: "deleted by request")
            case .pending, .terminating, .gone: break
            }
            return r.json
        }
        kick()
        return r
    }

    // MARK: discovery

    /// {"instances":[{kind, app, ordinal, node, state, ips}]} of every live instance; executor thread.
    /// Up to `limit` instances (not gone) after the token {kind, app, ordinal}, in key order, and the next token.
    package func snapshotPage(after: JSON?, limit: Int) throws -> (instances: [JSON], next: JSON?) {
        try state.ensureLoaded()
        let from = after.map { InstanceKey(kind: $0["kind"]?.string ?? "", app: $0["app"]?.string ?? "", ordinal: $0["ordinal"]?.int ?? 0) }
        var out: [JSON] = []
        for o in state.objects.values.sorted(by: { $0.key < $1.key }) {
            if let f = from, o.key < f.object { continue }
            for r in o.instances.values.sorted(by: { $0.key < $1.key }) where r.state != .gone {
                if let f = from, !(f < r.key) { continue }
                if out.count == limit {
                    let last = out[out.count - 1]
                    return (out, ["kind": last["kind"] ?? .null, "app": last["app"] ?? .null, "ordinal": last["ordinal"] ?? .null])
                }
                out.append(r.eventData)
            }
        }
        return (out, nil)
    }

    func snapshotInTransaction() throws -> JSON {
        try state.ensureLoaded()
        var out: [JSON] = []
        for o in state.objects.values.sorted(by: { $0.key < $1.key }) {
            for r in o.instances.values.sorted(by: { $0.key < $1.key }) where r.state != .gone { out.append(r.eventData) }
        }
        return ["instances": .array(out)]
    }
}
