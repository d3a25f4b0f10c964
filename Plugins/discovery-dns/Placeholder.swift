// Placeholder: replaced by the discovery-dns plugin.
