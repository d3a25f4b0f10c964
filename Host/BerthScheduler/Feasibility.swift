// Feasibility, the pipeline's first step: the checks a node must pass to take an instance, each a small type that
// owns its rejection reason (as Nomad's FeasibilityCheckers do), and the scan that runs them over a sample of nodes.
import BerthKinds
import BerthPluginABI

/// Why a node cannot take an instance, in the order the diagnosis lists them.
enum Rejection: Int, CaseIterable {
    case down, draining, cpu, memory, disk, ports, labels, addresses
    var text: String { Self.texts[rawValue] }
    static let texts = ["down", "draining", "insufficient cpu", "insufficient memory", "insufficient disk", "host ports in use",
                        "not matching nodeSelector/constraints", "without free addresses"]
}

/// The node is up; a draining node takes nothing new either.
struct NodeUp {
    let nodes: [NodeInfo]
    func reject(_ i: Int, _ h: NodeHot) -> Rejection? { h.up ? nil : nodes[i].state == .draining ? .draining : .down }
}

struct FreeCPU {
    let need: Int64
    func reject(_ h: NodeHot) -> Rejection? { h.cpuCap - h.cpuUsed < need ? .cpu : nil }
}

struct FreeMemory {
    let need: Int64
    func reject(_ h: NodeHot) -> Rejection? { h.memCap - h.memUsed < need ? .memory : nil }
}

struct FreeDisk {
    let need: Int64
    func reject(_ h: NodeHot) -> Rejection? { h.diskCap - h.diskUsed < need ? .disk : nil }
}

/// The app's host ports are free on the node, and the node has room for that many.
struct HostPorts {
    let ports: [Int]
    let nodes: [NodeInfo]
    func reject(_ i: Int, _ h: NodeHot) -> Rejection? {
        if ports.isEmpty { return nil }
        let used = nodes[i].portsUsed
        return Int(h.portsUsed) + ports.count > Int(h.portsCap) || ports.contains(where: { used[$0] != nil }) ? .ports : nil
    }
}

/// nodeSelector and constraints: the app's mask of matching nodes (cached per app until the node table changes).
struct Labels {
    let mask: [Bool]  // empty: no constraints
    func reject(_ i: Int) -> Rejection? { mask.isEmpty || mask[i] ? nil : .labels }
}

/// Free addresses of the app's network on the node (an instance whose identity prefers reserved addresses also fits
/// where only reserved ones are left).
struct FreeAddresses {
    let cache: CapacityCache
    let prefersReserved: Bool
    let now: Double
    let lookup: (Int) -> (free: Int64, reserved: Int64)
    func reject(_ i: Int) -> Rejection? {
        let c = cache.get(i, now, lookup)
        return c.free == 0 && !(prefersReserved && c.reserved > 0) ? .addresses : nil
    }
}

extension Scheduler {
    /// Runs the checks over the candidates: a sample of the nodes (like kube-scheduler's percentageOfNodesToScore:
    /// all below 100, 10% at 5,000, starting where the last scan ended) plus the instance's previous and volume node
    /// (sticky, always considered). Writes the feasible nodes' indexes into `slots` (and, for a plugin, their views
    /// into the batch); returns how many. Reads plain per-node values only (NodeHot).
    func feasible(_ r: InstanceRec, _ o: ObjectRec, _ d: inout Diagnosis, views withViews: Bool, now: Double) -> Int {
        let m = o.model
        let n = state.nodes.count
        growBatch(n)
        if !m.constraints.isEmpty && o.labelMaskGen != state.nodesGen {
            o.labelMask = state.nodes.map { m.matches($0.labelMap) }
            o.labelMaskGen = state.nodesGen
        }
        let up = NodeUp(nodes: state.nodes), ports = HostPorts(ports: m.ports, nodes: state.nodes)
        let cpu = FreeCPU(need: m.cpu), mem = FreeMemory(need: m.memory), disk = FreeDisk(need: m.disk)
        let labels = Labels(mask: m.constraints.isEmpty ? [] : o.labelMask)
        var addresses: FreeAddresses? = nil  // instances that keep their address skip it
        if settings.wireNetworks, let nr = m.network, !(nr.releasePolicy != "onDelete" && r.incarnation > 0) {
            let nodes = state.nodes, network = self.network, name = nr.name
            addresses = FreeAddresses(cache: capacityCache(nr.name), prefersReserved: nr.releasePolicy != "onDelete", now: now,
                                      lookup: { network.nodeCapacity(network: name, node: nodes[$0].name) })
        }
        let want = n < 100 ? n : max(100, n * max(5, 50 - n / 125) / 100)
        let start = n == 0 ? 0 : nextStart % n
        let views = batch.views
        var found = 0, scanned = 0
        state.hot.withUnsafeBufferPointer { hot in
            slots.withUnsafeMutableBufferPointer { slots in
                func consider(_ i: Int) {
                    let h = hot[i]
                    if let why = up.reject(i, h) { d.count(why); return }
                    if let why = cpu.reject(h) { d.count(why); return }
                    if let why = mem.reject(h) { d.count(why); return }
                    if let why = disk.reject(h) { d.count(why); return }
                    if let why = ports.reject(i, h) { d.count(why); return }
                    if let why = labels.reject(i) { d.count(why); return }
                    if let a = addresses, let why = a.reject(i) { d.count(why); return }
                    if withViews {
                        views[found] = berth_node_view(name: h.cname, index: UInt32(i), zone: h.zone, cpu_free_milli: h.cpuCap - h.cpuUsed - m.cpu,
                                                       memory_free: h.memCap - h.memUsed - m.memory, disk_free: h.diskCap - h.diskUsed - m.disk,
                                                       free_addresses: addresses?.cache.free[i] ?? -1, label_count: h.labelCount, labels: h.clabels)
                    }
                    slots[found] = i
                    found += 1
                }
                while scanned < n && found < want {
                    consider((start + scanned) % n)
                    scanned += 1
                }
                for name in [r.prevNode, r.volumeNode] where !name.isEmpty && scanned < n {
                    guard let i = state.nodeIndex[name], (i - start + n) % n >= scanned, !slots[0..<found].contains(i) else { continue }
                    var ignored = Diagnosis()  // outside the sample: not counted
                    swap(&d, &ignored)
                    consider(i)
                    swap(&d, &ignored)
                }
            }
        }
        nextStart = start + scanned
        return found
    }
}
