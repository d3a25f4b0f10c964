// Pending instances counted by app and reason, for /metrics (berth_instances_pending).
import BerthKinds
import BerthPlugins
import BerthStore

/// One series of berth_instances_pending.
public struct PendingKey: Hashable, Sendable {
    public let kind: String
    public let app: String
    public let reason: String
}

extension WorkloadService {
    /// Pending instances counted by (kind, app, reason).
    public func pendingByReason() async throws -> [PendingKey: Int] {
        try await tx {
            var out: [PendingKey: Int] = [:]
            for o in self.state.objects.values where !o.deleted {
                for r in o.instances.values where r.state == .pending {
                    out[PendingKey(kind: o.kind, app: o.name, reason: r.reason.isEmpty ? "not yet tried" : r.reason), default: 0] += 1
                }
            }
            return out
        }
    }
}
