// Discovery delivery's durable cursors (migration 4), and a namespace's entries in key order for the conformance kit.

extension Store {
    /// The durable cursor of a discovery plugin: the last revision it acknowledged, and the revision of its last resync.
    public func discoveryCursor(_ plugin: String) throws -> (rev: Int64, resyncRev: Int64)? {
        let s = try prepare("SELECT rev, resync_rev FROM discovery_cursors WHERE plugin=?1")
        s.bind(1, plugin)
        return try s.step() ? (s.int(0), s.int(1)) : nil
    }

    public func setDiscoveryCursor(_ plugin: String, rev: Int64, resyncRev: Int64) throws {
        let s = try prepare("INSERT OR REPLACE INTO discovery_cursors(plugin, rev, resync_rev, updated) VALUES(?1, ?2, ?3, ?4)")
        s.bind(1, plugin)
        s.bind(2, rev)
        s.bind(3, resyncRev)
        s.bind(4, wallClock())
        try s.run()
    }

    /// Every entry of a key-value namespace, in key order (for conformance checks and tests).
    public func kvEntries(_ ns: String) throws -> [(key: [UInt8], value: [UInt8])] {
        let s = try prepare("SELECT key, value FROM kv WHERE ns=?1 ORDER BY key")
        s.bind(1, ns)
        var out: [(key: [UInt8], value: [UInt8])] = []
        while try s.step() { out.append((s.bytes(0), s.bytes(1))) }
        return out
    }
}
