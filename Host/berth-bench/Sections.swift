// The benchmark sections beyond the ABI's, in the order they run.
let extraSections: [(String, () throws -> Void)] = [
    ("network", networkSection),
    ("storage", storageSection),
    ("startup", startupSection),
    ("scheduler", schedulerSection),
    ("isolation", isolationSection),
]
