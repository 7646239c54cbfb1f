"""``tdxfs stress``: N client processes mix every operation on one mount, then the
invariants are checked and printed as a table.

- ``ops``: the operations, one row each (reports by ioctl, one-fd transaction and the
  shell pattern; extends through ``rtmrN``, ``measurements/rtmrN:sha384``, ioctl and
  ``eventlog``; configfs quotes; event-log reads). Plain os calls, ``tdxfs.client`` and
  ``sh``: nothing here imports a FUSE binding.
- ``client``: one client process (``python -m tdxfs.stress.client``), its tally.
- ``check``: the invariants as pure functions over what the clients and the final reads
  brought back, so each can be fed a broken log or a foreign nonce without a mount.
- ``run``: the orchestration: its own mount in a daemon process (or ``--mount DIR``), the
  clients, the progress bar, the final reads, quote verification, the table and JSON.
"""
