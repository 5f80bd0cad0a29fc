"""Run a command with its address space capped: ``python benchmarks/memcap.py GB -- CMD ARGS...``.

Sets ``RLIMIT_AS`` (and tells the child through ``NSU_MEMORY_LIMIT_BYTES``) so that a run which would
take more memory fails with a MemoryError in that process instead of the kernel's out-of-memory
killer taking it, or another process on the machine. For benchmarks and manual CT-size tries.
"""

from __future__ import annotations

import os
import resource
import sys


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: python benchmarks/memcap.py GB -- CMD ARGS...")
    limit = int(float(sys.argv[1]) * 1024**3)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    os.execvp(sys.argv[3], sys.argv[3:])


if __name__ == "__main__":
    main()
