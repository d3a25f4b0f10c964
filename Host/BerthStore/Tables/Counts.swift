// Counts of what the host keeps per plugin, for the live-state probes (a plugin that holds live state is not
// disabled unless forced).

extension Store {
    /// Volumes the host knows of a storage plugin.
    public func volumeCount(plugin: String) throws -> Int {
        let s = try prepare("SELECT count(*) FROM volumes WHERE plugin=?1")
        s.bind(1, plugin)
        _ = try s.step()
        return Int(s.int(0))
    }

    /// Objects of a custom kind (owned by a scheduler plugin).
    public func objectCount(kind: String) throws -> Int {
        let s = try prepare("SELECT count(*) FROM objects WHERE kind=?1")
        s.bind(1, kind)
        _ = try s.step()
        return Int(s.int(0))
    }
}
