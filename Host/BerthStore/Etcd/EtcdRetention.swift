// Event retention on etcd (placeholder until the retention branch lands: keeps every event).
import BerthWire

extension EtcdStore {
    public var compactedThrough: Int64 { 0 }
    public func checkRetained(since: Int64) throws {}
    public func compactEvents(retain: Int, maxAge: Double?, limit: Int) throws -> (deleted: Int, more: Bool, empty: Bool) { (0, false, false) }
}
