"""One client process running one method N times: what ``strace -c`` is pointed at.

``python -m tdxfs.bench.worker METHOD MOUNT N`` — with N=0 it does all the set-up and
none of the operations, so (calls(N) - calls(0)) / N is the per-operation syscall count.
"""

import os
import random
import sys

from tdxfs.bench.methods import METHODS
from tdxfs.model.abi import REPORTDATA_SIZE


def main() -> int:
    name, mount, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    op = METHODS[name].open(mount)
    rng = random.Random(os.getpid())  # no getrandom() per nonce: it would count as a syscall
    nonces = [rng.randbytes(REPORTDATA_SIZE) for _ in range(min(count, 1024))]
    for i in range(count):
        op.run(nonces[i % len(nonces)])
    op.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
