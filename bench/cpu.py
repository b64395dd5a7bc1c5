"""CPU time from /proc: one process's, and the whole machine's busy share, over a measured interval.

They tell whether a throughput figure is the controller's own ceiling or the machine's: on 2 shared cores
the sandbox's API server emulator, Stripe fake, PostgreSQL and Kafka run beside the controller.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of proc(5))


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) ticks of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


@dataclass
class CpuMeter:
    """Started before a scenario, read after it."""

    pid: int
    _process_s: float = 0.0
    _machine: tuple[int, int] = (0, 0)

    def start(self) -> None:
        self._process_s, self._machine = process_cpu_s(self.pid), _machine_ticks()

    def process_s(self) -> float:
        return process_cpu_s(self.pid) - self._process_s

    def machine_busy_share(self) -> float:
        busy, total = _machine_ticks()
        return (busy - self._machine[0]) / max(1, total - self._machine[1])
