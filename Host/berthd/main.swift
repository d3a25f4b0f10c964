// berthd — the Berth host daemon.
import BerthPlugins
import BerthScheduler
import BerthStore
import ArgumentParser
import BerthCore
import BerthServer
import BerthWire
import Foundation
import Logging

@main
struct Berthd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "berthd",
        abstract: "The Berth host daemon: state, a tiny scheduler and an API; everything else comes from plugins.",
        discussion: """
        With no arguments berthd starts on its embedded default: state under ./berth-state, every reference \
        plugin found next to the berthd binary (or in $BERTH_PLUGIN_DIR) enabled, and the API on the unix \
        socket ./berth-state/berthd.sock. Pass --site FILE to run a site configuration instead; \
        --print-site-schema prints the JSON Schema that such a file must satisfy.

        A plugin that fails to load is listed as failed with its reason (`berth plugins list`); the daemon \
        keeps serving with the others.

        With store.engine "etcd" in the site, berthd is one host of a cluster: every berthd of the site shares \
        its state in etcd, registers its node, and one of them, elected, runs the scheduler (docs/cluster.md).
        """,
        version: BerthVersion.current)

    @Option(name: .long, help: "Site configuration file (JSON). Default: the embedded default site.")
    var site: String?

    @Option(name: .long, help: "Override the state directory of the site.")
    var stateDir: String?

    @Option(name: .long, help: "Override the API unix socket path.")
    var socket: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Flag(name: .long, help: "Print the site configuration's JSON Schema and exit.")
    var printSiteSchema = false

    @Flag(name: .long, help: "Validate everything start-up would (the site file, paths, the API settings, every enabled plugin loaded and created with its configuration on a scratch store), print the site with defaults filled in, and exit: 0 when it would start, 2 when not. Warnings go to stderr.")
    var check = false

    @Option(name: .long, help: "Restore a backup made by `berth backup` into the (empty) state directory of the site, and exit.")
    var restore: String?

    func run() async throws {
        if printSiteSchema {
            print(SiteConfig.schema.pretty)
            return
        }
        var logger = Logger(label: "berthd")
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("unknown log level \"\(logLevel)\"; use one of trace, debug, info, notice, warning, error, critical")
        }
        logger.logLevel = level
        var config: SiteConfig
        do {
            config = try site.map { try SiteConfig.load(path: $0) } ?? SiteConfig.embeddedDefault()
        } catch let e as SiteError {
            FileHandle.standardError.write(Data("berthd: \(e.description)\n".utf8))
            throw ExitCode(2)
        }
        if let stateDir { config.stateDir = stateDir }
        if let socket { config.socket = socket }
        do { try APIServer.checkListener(config) } catch {
            FileHandle.standardError.write(Data("berthd: invalid site configuration\(site.map { " \($0)" } ?? ""):\n  - \(error)\n".utf8))
            throw ExitCode(2)
        }
        if check {
            try checkSite(config, logger: logger)
            return
        }
        // One berthd per state directory and per socket; the lock is held until this process exits.
        do {
            _ = try StateLock.acquire(stateDir: config.stateDir)
            if let restore {
                try Restore.run(backup: restore, stateDir: config.stateDir)
                return
            }
            try StateLock.refuseServedSocket(config.socketPath)
        } catch {
            FileHandle.standardError.write(Data("berthd: \(error)\n".utf8))
            throw ExitCode(1)
        }
        // Plugins that keep files find the state directory here (absolute; runners inherit it): storage-local's
        // default data root is under it, whatever directory berthd is started from.
        setenv("BERTH_STATE_DIR", URL(fileURLWithPath: config.stateDir).standardizedFileURL.path, 1)
        let runtime: BerthRuntime
        do {
            runtime = try BerthRuntime(site: config, logger: logger)
        } catch {
            FileHandle.standardError.write(Data("berthd: cannot start: \(error)\n".utf8))
            throw ExitCode(1)
        }
        logger.info("berthd starting: site \(config.site), state \(config.stateDir), \(config.plugins.count) plugin(s) configured")
        runtime.siteFile = site
        runtime.loadPlugins()
        runtime.start()
        // SIGHUP: re-read the site file and apply the difference (nothing changes if it is invalid).
        signal(SIGHUP, SIG_IGN)
        let hup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        hup.setEventHandler {
            guard let file = runtime.siteFile else {
                logger.warning("SIGHUP: berthd runs on the embedded default site; nothing to reload")
                return
            }
            do {
                let changes = try runtime.apply(try SiteConfig.load(path: file), actor: "signal:SIGHUP")
                logger.info("SIGHUP: applied \(file): \(changes.filter { $0.action != .unchanged }.count) change(s)")
            } catch {
                logger.error("SIGHUP: \(file) not applied, the running configuration is unchanged: \(error)")
            }
        }
        hup.resume()
        try await APIServer(runtime: runtime).run(logger: logger)
        runtime.shutdown()
        logger.info("berthd stopped")
    }

    /// --check: loads and creates every enabled plugin on a scratch store, prints warnings and the etcd members to
    /// stderr, then the site with defaults filled in; exits 2 when the site would not start cleanly.
    private func checkSite(_ config: SiteConfig, logger: Logger) throws {
        var quiet = logger  // the plugins' own info lines would drown the report
        quiet.logLevel = max(logger.logLevel, .warning)
        let report = config.check(logger: quiet)
        for w in report.warnings { FileHandle.standardError.write(Data("berthd: warning: \(w)\n".utf8)) }
        for e in report.etcd {
            let members = e.members.map { "\($0.name) \($0.clientURLs.joined(separator: ","))" }.joined(separator: "; ")
            FileHandle.standardError.write(Data("berthd: store: etcd \(e.endpoint) answers, version \(e.version), \(e.members.count) member(s): \(members)\n".utf8))
        }
        guard report.problems.isEmpty else {
            FileHandle.standardError.write(Data("berthd: the site would not start cleanly:\n\(report.problems.map { "  - \($0)" }.joined(separator: "\n"))\n".utf8))
            throw ExitCode(2)
        }
        print(config.json.pretty)
    }
}
