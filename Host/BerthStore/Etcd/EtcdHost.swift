// The etcd engine as the host's store: its tables are key spaces (Tables/Keyed.swift), so berthd runs on it as on SQLite.
import BerthWire

extension EtcdStore: HostStore, KeyedHostTables {
    public var engineName: String { "etcd" }
}
