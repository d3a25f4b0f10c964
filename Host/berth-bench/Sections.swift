// The benchmark sections beyond the ABI's, in the order they run.
import BerthCheck
import BerthCore
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthWire
let extraSections: [(String, () throws -> Void)] = [
    ("network", networkSection),
    ("api", apiSection),
    ("ipam", ipamSection),
    ("storage", storageSection),
    ("startup", startupSection),
    ("scheduler", schedulerSection),
    ("isolation", isolationSection),
    ("stalls", stallsSection),
    ("etcd", etcdSection),
    ("runtime", runtimeSection),
    ("cluster", clusterSection),
    ("cluster-api", clusterAPISection),
]
