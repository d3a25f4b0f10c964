// `berth plugin check --store etcd://…`: the etcd engine a check runs on, under a site name of the run's own (so its
// keys share one fresh prefix, /berth/check-<pid>-<ns>/, which the check removes at the end).
import BerthStore
import BerthWire

#if canImport(Glibc)
import Glibc
#endif

public enum CheckStore {
    /// Opens the etcd engine for a check run; a malformed URL or an unreachable etcd is a clear error, and nothing
    /// is written to etcd by opening it.
    public static func openEtcd(_ url: String) throws -> EtcdStore {
        let endpoints = try EtcdSettings.endpoints(fromStoreURL: url)
        return try EtcdStore(EtcdSettings(endpoints: endpoints, site: "check-\(getpid())-\(monotonicNanos())", timeoutSeconds: 5))
    }
}
