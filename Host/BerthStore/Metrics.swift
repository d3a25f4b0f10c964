// The store's series for /metrics: the executor (busy time, commits, operations, syncs) and the write-ahead log
// (checkpoints, pages), in the Prometheus text format.

extension Executor {
    public var metricsText: String {
        let sqlite = store as? Store  // the log's series are SQLite's (0 on another engine)
        return [
            "# HELP berth_executor_busy_seconds How long the store executor has been inside its current batch (0 when idle); every state change waits while it grows.\n# TYPE berth_executor_busy_seconds gauge\nberth_executor_busy_seconds \(busy?.seconds ?? 0)\n",
            "# HELP berth_store_commits_total Store commits (group commits).\n# TYPE berth_store_commits_total counter\nberth_store_commits_total \(commits)\n",
            "# HELP berth_store_operations_total Operations committed.\n# TYPE berth_store_operations_total counter\nberth_store_operations_total \(operations)\n",
            "# HELP berth_store_checkpoints_total Checkpoints of the store's write-ahead log into its database file (at 4000 log pages after a commit, from 1000 once the executor has been idle for 50 ms), by result.\n# TYPE berth_store_checkpoints_total counter\n",
            "berth_store_checkpoints_total{result=\"ok\"} \(sqlite?.checkpoints.load(ordering: .relaxed) ?? 0)\nberth_store_checkpoints_total{result=\"failed\"} \(sqlite?.checkpointFailures.load(ordering: .relaxed) ?? 0)\n",
            "# HELP berth_store_log_pages Pages (4 KiB) in the store's write-ahead log after the last commit or checkpoint; the log starts over after a checkpoint.\n# TYPE berth_store_log_pages gauge\nberth_store_log_pages \(sqlite?.logPages.load(ordering: .relaxed) ?? 0)\n",
            "# HELP berth_store_accepting_changes 1 while the state store takes changes; 0 after an fsync of its log failed (restart berthd).\n# TYPE berth_store_accepting_changes gauge\nberth_store_accepting_changes \(stoppedReason == nil ? 1 : 0)\n",
            "# HELP berth_store_syncs_total fsyncs of the store's log that made commits durable (store.sync full; one covers every batch committed before it).\n# TYPE berth_store_syncs_total counter\nberth_store_syncs_total \(syncs)\n",
            "# HELP berth_store_conflicts_total Commits an optimistic store engine refused because something the batch read changed meanwhile (the batch ran again).\n# TYPE berth_store_conflicts_total counter\nberth_store_conflicts_total \(conflicts)\n",
        ].joined() + ((store as? EtcdStore)?.metricsText ?? "")
    }
}

extension EtcdStore {
    /// The etcd engine's series: requests by kind, and its local copy (EtcdMirror).
    var metricsText: String {
        let m = mirror
        return [
            "# HELP berth_store_etcd_requests_total Requests this berthd's store sent to etcd (each attempt), by kind: range reads, Txns (commits, the compares of read-only transactions that read the local copy, and an exclusive commit's key and checks), other (leases, authentication, compaction).\n# TYPE berth_store_etcd_requests_total counter\n",
            "berth_store_etcd_requests_total{kind=\"range\"} \(client.ranges.load(ordering: .relaxed))\nberth_store_etcd_requests_total{kind=\"txn\"} \(client.txns.load(ordering: .relaxed))\nberth_store_etcd_requests_total{kind=\"other\"} \(client.others.load(ordering: .relaxed))\n",
            "# HELP berth_store_etcd_exclusive_commits_total Commits whose reads did not fit one Txn's compares (etcd's --max-txn-ops), made while holding the site's exclusive key (no other berthd commits meanwhile).\n# TYPE berth_store_etcd_exclusive_commits_total counter\nberth_store_etcd_exclusive_commits_total \(exclusiveCommits.load(ordering: .relaxed))\n",
            "# HELP berth_store_mirror_loads_total Times the local copy of the key-value state was loaded from etcd (at start, and again after its watch lost changes).\n# TYPE berth_store_mirror_loads_total counter\nberth_store_mirror_loads_total \(m?.loads.load(ordering: .relaxed) ?? 0)\n",
            "# HELP berth_store_mirror_fallbacks_total Transactions that read etcd instead of the local copy because it was not current in time (or could not be loaded).\n# TYPE berth_store_mirror_fallbacks_total counter\nberth_store_mirror_fallbacks_total \(m?.fallbacks.load(ordering: .relaxed) ?? 0)\n",
            "# HELP berth_store_mirror_wait_seconds_total Time transactions waited for the local copy to have this berthd's own last commit.\n# TYPE berth_store_mirror_wait_seconds_total counter\nberth_store_mirror_wait_seconds_total \(Double(m?.waited.load(ordering: .relaxed) ?? 0) / 1e9)\n",
        ].joined()
    }
}
