// The site's `agent` section: how this node's agent runs what is placed on it (which runtime plugin, how often it
// converges, the CNI bridge and plugin path, where it keeps its per-node files). Documented in docs/site.md.
import BerthWire
import Foundation

public struct AgentSite: Sendable, Equatable {
    /// The runtime plugin instance that runs instances; nil: the only loaded runtime plugin (none: nothing runs).
    public var runtime: String? = nil
    /// Seconds between two periodic convergences (changes to workloads wake the agent sooner).
    public var tickSeconds: Double = 2
    /// The Linux bridge the CNI `bridge` plugin attaches instances to (its address is the pool's gateway).
    public var bridge: String = "berth0"
    /// CNI_PATH: where the chain's plugins (bridge, berth-cni) are looked up; nil: /usr/lib/cni, /opt/cni/bin and
    /// the directory of the running berthd (where berth-cni is built).
    public var cniPath: String? = nil
    /// The agent's files (CNI configurations, restart records); nil: <stateDir>/agent.
    public var stateDir: String? = nil
    /// Restart backoff: first delay and ceiling, in seconds.
    public var backoffSeconds: Double = 0.5
    public var maxBackoffSeconds: Double = 30

    public init() {}

    static let schemaProperty = #"""
    "agent": {
      "type": "object", "additionalProperties": false,
      "description": "The node agent: runs the instances placed on this node with a runtime plugin (docs/apps.md, Running instances).",
      "properties": {
        "runtime": {"type": "string", "minLength": 1, "maxLength": 63, "description": "The runtime plugin instance that runs instances. Default: the only loaded runtime plugin."},
        "tickSeconds": {"type": "number", "minimum": 0.1, "maximum": 3600, "description": "Seconds between periodic convergences of desired and actual instances (default 2); workload changes wake the agent sooner."},
        "bridge": {"type": "string", "minLength": 1, "maxLength": 15, "pattern": "^[A-Za-z0-9_.-]+$", "description": "The Linux bridge instances are attached to by the CNI bridge plugin (default berth0)."},
        "cniPath": {"type": "string", "minLength": 1, "description": "CNI_PATH for the chain (bridge, berth-cni). Default: /usr/lib/cni:/opt/cni/bin:<berthd's directory>."},
        "stateDir": {"type": "string", "minLength": 1, "description": "The agent's files on this node (CNI configurations, restart records). Default: <stateDir>/agent."},
        "backoffSeconds": {"type": "number", "minimum": 0, "maximum": 3600, "description": "First delay before restarting an exited instance (default 0.5); doubles with each restart in a row."},
        "maxBackoffSeconds": {"type": "number", "minimum": 0, "maximum": 86400, "description": "The longest restart delay (default 30)."}
      }
    },
    """#

    static func parse(_ v: JSON?, baseDir: String) -> AgentSite {
        var a = AgentSite()
        guard let v else { return a }
        a.runtime = v["runtime"]?.string
        if let t = v["tickSeconds"]?.double { a.tickSeconds = t }
        if let b = v["bridge"]?.string { a.bridge = b }
        a.cniPath = v["cniPath"]?.string
        a.stateDir = v["stateDir"]?.string.map { SiteConfig.resolve($0, baseDir) }
        if let b = v["backoffSeconds"]?.double { a.backoffSeconds = b }
        if let m = v["maxBackoffSeconds"]?.double { a.maxBackoffSeconds = m }
        return a
    }

    var json: JSON {
        var j: JSON = ["tickSeconds": .number(tickSeconds), "bridge": .string(bridge), "backoffSeconds": .number(backoffSeconds),
                       "maxBackoffSeconds": .number(maxBackoffSeconds)]
        if let runtime { j = j.setting("runtime", .string(runtime)) }
        if let cniPath { j = j.setting("cniPath", .string(cniPath)) }
        if let stateDir { j = j.setting("stateDir", .string(stateDir)) }
        return j
    }
}
