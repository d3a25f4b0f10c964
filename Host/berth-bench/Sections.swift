// The benchmark sections beyond the ABI's, in the order they run.
let extraSections: [(String, () throws -> Void)] = [
    ("network", networkSection),
    ("api", apiSection),
    ("ipam", ipamSection),
    ("storage", storageSection),
    ("startup", startupSection),
    ("scheduler", schedulerSection),
    ("isolation", isolationSection),
    ("stalls", stallsSection),
]
