"""`python -m bench.peak FILE -m MODULE [ARG...]`: run MODULE as `__main__` and, as this
process exits, write its peak resident set size (KiB) to FILE.

The peak is the process's own high-water mark (`VmHWM`). The `ru_maxrss` that `wait4`
reports would not do: a process keeps the high-water mark of the one it was forked
from, so every command the bench starts would weigh at least as much as the bench.
"""

from __future__ import annotations

import atexit
import runpy
import sys
from pathlib import Path


def peak_kib() -> int:
    """This process's peak resident set size so far, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    output, flag, module, *args = sys.argv[1:]
    if flag != "-m":
        raise SystemExit(__doc__)
    atexit.register(lambda: Path(output).write_text(f"{peak_kib()}\n"))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
