"""Files over the model: rows of a table served by generic handlers (no FUSE import)."""
