// A network's free and reserved addresses on one node (the plugin's capacity op), for the scheduler's
// feasibility check on the executor thread.
import BerthPlugins
import BerthWire

extension NetworkService {
    /// (free, reserved) addresses of `network` on `node`; (-1, -1) when the plugin cannot say.
    package func nodeCapacity(network: String, node: String) -> (free: Int64, reserved: Int64) {
        guard let ops = try? plugin(network).networkOps, ops.has(.capacity),
              let j = try? ops.capacity(["network": .string(network), "node": .string(node)]) else { return (-1, -1) }
        return (Int64(j["free"]?.int ?? -1), Int64(j["reserved"]?.int ?? 0))
    }
}
