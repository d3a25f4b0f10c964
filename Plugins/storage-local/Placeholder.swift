// Placeholder: replaced by the storage-local plugin.
