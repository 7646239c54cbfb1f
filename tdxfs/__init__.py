"""tdxfs: a software TDX guest (module model, FUSE files, ioctl node) for attestation work without TDX hardware."""

__version__ = "0.1.0"
