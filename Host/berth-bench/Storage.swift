// Volume lifecycle: create+publish+unpublish+delete cycles through the host (StorageService, real store
// transactions, storage-local with real bind mounts) next to the same operations done directly on the
// filesystem, alternated cycle by cycle in the same run (BerthCore/StorageBench.swift).
import BerthWire
import BerthCheck
import BerthKinds
import BerthPlugins
import BerthScheduler
import BerthStore
import BerthCore
import Foundation

func storageSection() throws {
    guard getuid() == 0 else { throw BenchFailure(description: "the storage benchmark needs root (bind mounts)") }
    let cycles = quick ? 20 : 300
    let r = benchStorageCycles(root: NSTemporaryDirectory(), cycles: cycles)
    guard r.apiPerSec > 0, r.directPerSec > 0 else { throw BenchFailure(description: "the storage benchmark did not run") }
    rows.append(BenchRow(section: "storage", name: "volume create+publish+unpublish+delete via the host (sync=full)", value: r.apiPerSec,
                         unit: "cycles/s", baseline: "mkdir+bind mount+umount+rmdir directly", baselineValue: r.directPerSec))
}
