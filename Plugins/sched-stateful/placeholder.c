/* Placeholder: replaced by the sched-stateful plugin. */
