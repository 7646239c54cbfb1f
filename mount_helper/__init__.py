"""mount.fuse.tdxfs: the mount(8) helper for tdxfs."""
