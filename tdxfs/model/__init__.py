"""The TDX module model: ABI, TD profile, platform and trust domain, state directory. No FUSE here."""
