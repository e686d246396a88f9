"""Protocol decoders: one module per protocol, pure functions from bytes to typed events."""
