"""Clients of a TDX guest's attestation interfaces (a tdxfs mount or a real guest).

``ioctl``: /dev/tdx_guest through ``libc.ioctl`` (ctypes, GIL released during the call).
``files``: the file patterns — the shared reportdata+tdreport pair and the one-fd transaction.
Every function returns the 1024-byte TDREPORT for the REPORTDATA given.
"""
