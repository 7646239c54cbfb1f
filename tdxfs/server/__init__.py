"""The FUSE side: the one binding import, the thin adapter, the mount daemon."""
