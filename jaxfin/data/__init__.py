"""Data: tokenizers, packing into the one batch shape, batch iteration with a checkpointable position."""
