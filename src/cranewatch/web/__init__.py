"""Read-only web dashboard over the store."""
