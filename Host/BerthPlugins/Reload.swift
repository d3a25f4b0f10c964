// Features per site at run time: diff a new site configuration against the running one and apply it —
// enable, disable (refused while the plugin holds live state, unless forced), reconfigure (validated first;
// the plugin's reconfigure if it has one, else a new instance), upgrade to a new file (a new content-addressed
// copy, a new instance, an atomic swap). Everything is validated before anything changes, and the changes of one
// apply land together or not at all. Swaps happen on the
// executor thread, where every plugin operation runs, so no call is ever in flight on an instance being
// replaced, and operations queued before the swap finish on the old instance first.
import BerthStore
import BerthWire
import Foundation

public struct PlannedChange: Sendable {
    public enum Action: String, Sendable { case enable, disable, reconfigure, upgrade, unchanged }
    public let action: Action
    public let name: String
    public let detail: String
    public var json: JSON { ["action": .string(action.rawValue), "plugin": .string(name), "detail": .string(detail)] }
}

extension PluginHost {
    /// Live state a plugin holds, from every registered probe: (count, what).
    func liveState(_ name: String) throws -> [(Int, String)] {
        let probes = liveStateProbes
        return try executor.runSync { try probes.map { try $0(name) }.filter { $0.count > 0 } }
    }

    /// Applies a new site configuration. Validates everything first; on any problem nothing changes and the
    /// error names each problem. Returns the list of changes made (or planned, with dryRun).
    public func apply(_ new: SiteConfig, actor: String, force: Bool = false, dryRun: Bool = false) throws -> [PlannedChange] {
        let cur = site
        var problems = Self.restartOnly(new, running: cur)
        // A dry run's runners: staged instances run in them; whatever is left is stopped when the dry run ends.
        var dryLoaded: [LoadedPlugin] = []
        defer { for l in dryLoaded { RemotePlugin.discardDryRun(l) } }
        var plan = planChanges(new, dryRun: dryRun, problems: &problems, dryLoaded: &dryLoaded)
        for (change, _, _) in plan where change.action == .disable && !force {
            let held = try liveState(change.name)
            if !held.isEmpty {
                problems.append("plugins.\(change.name): still holds \(held.map { "\($0.0) \($0.1)" }.joined(separator: ", ")); release them first or force")
            }
        }
        if !problems.isEmpty { throw SiteError(problems: problems) }
        plan = try execute(plan, dryRun: dryRun, actor: actor)
        if dryRun { return plan.map { $0.0 } }
        for (change, _, spec) in plan where change.action == .unchanged {
            if let old = entry(spec.name), old.instance == nil, !spec.enabled { replaceEntry(PluginEntry(spec: spec, state: .disabled)) }
        }
        for (change, _, _) in plan where change.action != .unchanged {
            logger.info("plugin \"\(change.name)\": \(change.action.rawValue) \(change.detail) (by \(actor))")
        }
        var applied = new
        applied.siteFileKeep(from: cur)
        lock.withLock { currentSite = applied }
        return plan.map { $0.0 }
    }

    /// Settings that only a restart changes: each one that differs is a problem.
    static func restartOnly(_ new: SiteConfig, running cur: SiteConfig) -> [String] {
        var problems: [String] = []
        if new.stateDir != cur.stateDir { problems.append("stateDir: changing it needs a restart of berthd (running: \(cur.stateDir))") }
        if new.socketPath != cur.socketPath { problems.append("api.socket: changing it needs a restart of berthd") }
        if new.listen != cur.listen || new.token != cur.token { problems.append("api.listen/api.token: changing them needs a restart of berthd") }
        if new.tls != cur.tls { problems.append("api.tls: changing it needs a restart of berthd") }
        if new.headerTimeoutMs != cur.headerTimeoutMs || new.bodyTimeoutMs != cur.bodyTimeoutMs || new.idleTimeoutMs != cur.idleTimeoutMs
            || new.maxConnections != cur.maxConnections {
            problems.append("api.headerTimeoutMs/bodyTimeoutMs/idleTimeoutMs/maxConnections: changing them needs a restart of berthd")
        }
        if new.sync != cur.sync { problems.append("store.sync: changing it needs a restart of berthd") }
        if new.store != cur.store { problems.append("store.engine, store.endpoints, store.tls, store.username, store.password(File), store.prefix: changing them needs a restart of berthd") }
        if new.agent != cur.agent { problems.append("agent: changing the node agent's settings needs a restart of berthd (its instances keep running)") }
        return problems
    }

    typealias Planned = (PlannedChange, LoadedPlugin?, PluginSpec)

    /// Stages every new or changed plugin (loaded and its configuration validated, the running ones untouched) and
    /// says what would change for each; what cannot be staged goes to `problems`.
    func planChanges(_ new: SiteConfig, dryRun: Bool, problems: inout [String], dryLoaded: inout [LoadedPlugin]) -> [Planned] {
        var plan: [Planned] = []
        for spec in new.plugins {
            let old = entry(spec.name)
            if !spec.enabled {
                let was = old?.instance != nil
                plan.append((PlannedChange(action: was ? .disable : .unchanged, name: spec.name, detail: was ? "enabled: false" : "disabled"), nil, spec))
                continue
            }
            let loaded: LoadedPlugin
            // Staged the way the plugin will run: an isolated plugin is loaded in a runner, never in berthd. A dry run
            // stages every plugin in a runner (its constructors never run in berthd) and copies nothing.
            do {
                if dryRun {
                    loaded = try RemotePlugin.load(spec, loader: loader, callTimeoutMs: site.callTimeoutMs, dryRun: true, log: pluginLog(spec.name))
                    dryLoaded.append(loaded)
                } else {
                    loaded = try loadPlugin(spec)
                }
            } catch {
                problems.append("plugins.\(spec.name): \((error as? LoadError)?.reason ?? "\(error)")")
                continue
            }
            if let schema = loaded.configSchema {
                let errs = Schema.validate(spec.config, against: schema, path: "plugins.\(spec.name).config")
                if !errs.isEmpty { problems += errs.map { $0.description }; continue }
            }
            plan.append(change(spec, loaded, old))
        }
        let names = Set(new.plugins.map { $0.name })
        for e in plugins where !names.contains(e.spec.name) && e.instance != nil {
            var off = e.spec
            off.enabled = false
            plan.append((PlannedChange(action: .disable, name: e.spec.name, detail: "removed from the site"), nil, off))
        }
        return plan
    }

    /// What a staged plugin changes against its running entry: enable, upgrade, reconfigure or nothing.
    private func change(_ spec: PluginSpec, _ loaded: LoadedPlugin, _ old: PluginEntry?) -> Planned {
        guard let old, let inst = old.instance else {
            return (PlannedChange(action: .enable, name: spec.name, detail: "\(loaded.name) \(loaded.version)"), loaded, spec)
        }
        let limitsChanged = spec.memoryLimitBytes != old.spec.memoryLimitBytes || spec.openFilesLimit != old.spec.openFilesLimit
        if loaded.sha256 != inst.plugin.sha256 || spec.isolation != old.spec.isolation || limitsChanged {
            return (PlannedChange(action: .upgrade, name: spec.name,
                                  detail: "\(inst.plugin.version) (\(inst.plugin.sha256.prefix(12))) -> \(loaded.version) (\(loaded.sha256.prefix(12)))"), loaded, spec)
        }
        if spec.config != old.spec.config {
            return (PlannedChange(action: .reconfigure, name: spec.name, detail: inst.plugin.reconfigurable ? "in place" : "new instance"), loaded, spec)
        }
        return (PlannedChange(action: .unchanged, name: spec.name, detail: ""), nil, spec)
    }

    /// Executes a plan, all or nothing, in one job on the executor (so no operation runs between the steps, and the
    /// plugins' key-value writes during create/reconfigure share one savepoint): create every new instance, then
    /// reconfigure in place; a failure in either undoes what came before it (new instances destroyed, in-place
    /// reconfigurations given their old configuration back) and changes nothing. Only then swap. A dry run stages
    /// exactly the same way, then undoes it all and rolls the savepoint back, so what it reports (including "in
    /// place" or "new instance") is what the apply would do. Returns the plan as executed.
    private func execute(_ plan: [Planned], dryRun: Bool, actor: String) throws -> [Planned] {
        func described(_ staged: [String: String]) -> [Planned] {
            plan.map { p in
                guard p.0.action == .reconfigure, let how = staged[p.0.name] else { return p }
                return (PlannedChange(action: .reconfigure, name: p.0.name, detail: how), p.1, p.2)
            }
        }
        let toStage = plan.filter { $0.0.action != .unchanged }
        do {
            return try executor.runSync {
                let (fresh, reconfigured) = try self.stage(toStage)
                var how: [String: String] = [:]
                for (inst, _) in reconfigured { how[inst.name] = "in place" }
                for name in fresh.keys { how[name] = "new instance" }
                guard !dryRun else {
                    for (inst, config) in reconfigured.reversed() { _ = try? inst.reconfigure(config) }
                    for inst in fresh.values { inst.destroy() }
                    throw DryRunDone(details: how)  // rolls back the plugins' key-value writes too
                }
                let done = described(how)
                try self.swap(done.filter { $0.0.action != .unchanged }, fresh: fresh, actor: actor)
                return done
            }
        } catch let done as DryRunDone {
            return described(done.details)
        }
    }

    /// Creates the new instances and reconfigures in place, on the executor thread. A plugin whose reconfigure
    /// answers UNIMPLEMENTED ("reconfigured by a new instance", as storage-local does) gets a new instance. On any
    /// failure everything staged so far is undone and the error names the plugin.
    private func stage(_ changed: [(PlannedChange, LoadedPlugin?, PluginSpec)]) throws -> ([String: PluginInstance], [(PluginInstance, JSON)]) {
        var fresh: [String: PluginInstance] = [:]
        var reconfigured: [(PluginInstance, JSON)] = []
        func undo() {
            for (inst, config) in reconfigured.reversed() { _ = try? inst.reconfigure(config) }
            for inst in fresh.values { inst.destroy() }
        }
        for (change, loaded, spec) in changed {
            do {
                switch change.action {
                case .enable, .upgrade:
                    fresh[spec.name] = try makeInstance(loaded!, spec)
                case .reconfigure:
                    let old = entry(spec.name)!
                    var inPlace = false
                    if let inst = old.instance, inst.plugin.reconfigurable {
                        do {
                            inPlace = try inst.reconfigure(spec.config)
                            reconfigured.append((inst, old.spec.config))
                        } catch let e as BerthError where e.status == .unimplemented {
                            inPlace = false  // UNIMPLEMENTED: this plugin is reconfigured by a new instance
                        }
                    }
                    if !inPlace { fresh[spec.name] = try makeInstance(loaded!, spec) }
                case .disable, .unchanged:
                    break
                }
            } catch {
                undo()
                let why = (error as? LoadError)?.reason ?? "\(error)"
                throw SiteError(problems: ["plugins.\(spec.name): \(change.action.rawValue) failed, nothing was changed: \(why)"])
            }
        }
        return (fresh, reconfigured)
    }

    /// Puts the staged instances in place of the old ones (destroyed), records one event per change.
    private func swap(_ changed: [(PlannedChange, LoadedPlugin?, PluginSpec)], fresh: [String: PluginInstance], actor: String) throws {
        for (change, _, spec) in changed {
            let previous: PluginEntry?
            switch change.action {
            case .enable, .upgrade, .reconfigure:
                let inst = fresh[spec.name] ?? self.entry(spec.name)!.instance!
                previous = self.replaceEntry(PluginEntry(spec: spec, state: .loaded, instance: inst))
                if let old = previous?.instance, old !== inst { old.destroy() }
            case .disable:
                previous = self.replaceEntry(PluginEntry(spec: spec, state: .disabled))
                previous?.instance?.destroy()
            case .unchanged:
                break
            }
            self.executor.noteEvent(try self.store.appendEvent(type: "plugin.\(change.action.rawValue)d", subject: change.name,
                                                               actor: actor, data: change.json))
        }
    }

    /// Enables or disables one plugin of the running site.
    public func setEnabled(_ name: String, _ enabled: Bool, actor: String, force: Bool) throws -> [PlannedChange] {
        var s = site
        guard let i = s.plugins.firstIndex(where: { $0.name == name }) else { throw BerthError(.notFound, "no plugin named \"\(name)\" in the site") }
        s.plugins[i].enabled = enabled
        return try apply(s, actor: actor, force: force)
    }

    /// Re-reads a plugin's file: a changed file is an upgrade; an unchanged one gets a fresh instance.
    public func reload(_ name: String, actor: String) throws -> [PlannedChange] {
        guard let e = entry(name) else { throw BerthError(.notFound, "no plugin named \"\(name)\"") }
        let loaded = try loadPlugin(e.spec)
        let change = PlannedChange(action: .upgrade, name: name, detail: "reload from \(e.spec.path) (\(loaded.sha256.prefix(12)))")
        try executor.runSync {
            let fresh = try self.makeInstance(loaded, e.spec)
            let previous = self.replaceEntry(PluginEntry(spec: e.spec, state: .loaded, instance: fresh))
            previous?.instance?.destroy()
            self.executor.noteEvent(try self.store.appendEvent(type: "plugin.reloaded", subject: name, actor: actor, data: change.json))
        }
        return [change]
    }
}

/// Ends a dry run's staging job: its savepoint rolls back; carries how each reconfiguration would be made.
struct DryRunDone: Error {
    let details: [String: String]
}

extension SiteConfig {
    /// Keeps settings that only a restart can change.
    mutating func siteFileKeep(from running: SiteConfig) {
        stateDir = running.stateDir
        socket = running.socket
    }
}
