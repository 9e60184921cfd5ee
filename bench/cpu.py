"""Where the CPU went during a measurement: processes (with their children), this
process's reaped children (wrk, pgbench), and the whole machine."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

Meter = Callable[[], float]
"""CPU seconds used so far by something (a process, a group of them, the machine)."""
T = TypeVar("T")

_TICK = os.sysconf("SC_CLK_TCK")
STABLE_TRIES = 1000
"""Readings of a process tree to try (1 ms apart) before giving up on a stable one."""
MACHINE = "machine"
"""The split's entry for every process on the machine (busy CPU time, all cores)."""
STEAL = "steal"
"""The split's entry for time the hypervisor gave the machine's cores to other guests."""
OVERALL = (MACHINE, STEAL)


def tree_seconds(pid: int) -> float:
    """CPU time of the process, of its children that have exited (and were reaped),
    and of those still running (PostgreSQL's postmaster and its backends).

    A child reaped while the children are listed would be missed (no longer listed,
    not yet in the parent's total when it was read), and one that has exited is
    about to be: so the reading is taken again until no child is a zombie and the
    parent's total of reaped children did not change meanwhile.
    """
    for _ in range(STABLE_TRIES):
        _, parent = _stat(pid)
        children = _children(pid)
        _, again = _stat(pid)
        zombies = any(state == "Z" for state, _ in children)
        if not zombies and again[13:15] == parent[13:15]:
            running = sum(sum(fields[11:13]) for _, fields in children)
            return (sum(again[11:15]) + running) / _TICK
        time.sleep(0.001)
    raise RuntimeError(f"the children of process {pid} kept exiting: no stable reading")


def _children(pid: int) -> list[tuple[str, list[int]]]:
    """The state and /proc stat fields of every child of `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            state, fields = _stat(int(entry.name))
        except (OSError, IndexError, ValueError):  # gone meanwhile, or unreadable
            continue
        if fields[1] == pid:
            found.append((state, fields))
    return found


def children_seconds() -> float:
    """CPU time of this process's children that have exited and were reaped (a wrk or
    pgbench run, once `subprocess.run` returns)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_seconds() -> float:
    """CPU time of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _machine() -> list[int]:
    """The machine's CPU times (/proc/stat's first line: user nice system idle iowait irq
    softirq steal ...), in clock ticks over all cores."""
    first = Path("/proc/stat").read_text().split("\n", 1)[0]
    return [int(value) for value in first.split()[1:]]


def machine_busy_seconds() -> float:
    """CPU time every process on the machine (and the kernel for them) has used, all cores."""
    times = _machine()
    return (times[0] + times[1] + times[2] + times[5] + times[6]) / _TICK


def machine_steal_seconds() -> float:
    """Time the hypervisor ran other guests while this machine's cores wanted to run."""
    return _machine()[7] / _TICK


def _stat(pid: int) -> tuple[str, list[int]]:
    """/proc/<pid>/stat's state (Z: exited, not yet reaped), and its fields after the
    command name, from the state on: [1] is the parent's pid, [11:15] utime, stime,
    cutime, cstime (ticks); the state reads as 0."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return fields[0], [0, *(int(field) for field in fields[1:15])]


@dataclass(frozen=True)
class CpuSplit:
    """The cores each meter kept busy on average over `seconds` of wall time."""

    seconds: float
    cores: dict[str, float]

    @property
    def rest(self) -> float:
        """Cores busy with anything else on the machine (the meters are taken to be
        disjoint): other processes, and kernel threads (such as the file system's
        journal). A process's share includes the interrupts that fell in its time."""
        return self.cores[MACHINE] - sum(
            value for name, value in self.cores.items() if name not in OVERALL
        )

    def note(self) -> str:
        """`name cores, ...` for every meter, then the rest, the machine and steal."""
        shown = [name for name in self.cores if name not in OVERALL]
        parts = [f"{name} {self.cores[name]:.2f}" for name in shown]
        parts.append(f"rest {self.rest:.2f}")
        parts.append(f"whole machine {self.cores[MACHINE]:.2f} of {os.cpu_count()}")
        if self.cores[STEAL] >= 0.01:
            parts.append(f"steal {self.cores[STEAL]:.2f}")
        return "cores: " + ", ".join(parts)

    def as_json(self) -> dict[str, float]:
        return {name: round(value, 3) for name, value in {**self.cores, "rest": self.rest}.items()}


def measured(meters: Mapping[str, Meter], work: Callable[[], T]) -> tuple[T, CpuSplit]:
    """Run `work()`; its result, and the cores each meter (and the whole machine) used
    meanwhile."""
    every = {**meters, MACHINE: machine_busy_seconds, STEAL: machine_steal_seconds}
    before = {name: meter() for name, meter in every.items()}
    started = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - started
    after = {name: meter() for name, meter in every.items()}
    return result, CpuSplit(
        seconds, {name: (after[name] - before[name]) / seconds for name in every}
    )


def combined(splits: Sequence[CpuSplit]) -> CpuSplit:
    """Several measurements as one: each meter's cores over their whole time."""
    seconds = sum(split.seconds for split in splits)
    names = splits[0].cores
    return CpuSplit(
        seconds,
        {
            name: sum(split.cores[name] * split.seconds for split in splits) / seconds
            for name in names
        },
    )
