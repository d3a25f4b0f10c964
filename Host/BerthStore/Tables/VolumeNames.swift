// Volumes looked up by name within a storage plugin (table volumes): how an app's volume template finds the
// volume an earlier incarnation of its instance created.

extension Store {
    /// The id and the plugin's volume record (JSON text) of the volume named `name`, or nil.
    public func volume(plugin: String, named name: String) throws -> (id: String, volume: String)? {
        let s = try prepare("SELECT id, volume FROM volumes WHERE plugin=?1 AND name=?2")
        s.bind(1, plugin); s.bind(2, name)
        return try s.step() ? (s.text(0), s.text(1)) : nil
    }
}
