"""The pinned kubectl binary (tests/chart/tools.py) run as an asyncio subprocess: the controller, the receiver and
the API server keep running meanwhile. Each user gives it its own kubeconfig and discovery cache folder, so that
nothing from another run or another cluster on a reused port is read."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def ok(self) -> Result:
        assert self.returncode == 0, f"kubectl {' '.join(self.args)} exited {self.returncode}: {self.stderr}"
        return self


@dataclass(frozen=True)
class Kubectl:
    binary: Path
    kubeconfig: str
    namespace: str
    cache_dir: Path

    async def __call__(self, *args: str, stdin: str | None = None, timeout: float = 60.0) -> Result:
        """Run kubectl in the tenant's namespace without blocking the event loop; kill it at the deadline."""
        argv = (str(self.binary), "--kubeconfig", self.kubeconfig, "--cache-dir", str(self.cache_dir),
                "-n", self.namespace, *args)
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "KUBECONFIG": self.kubeconfig})
        try:
            out, err = await asyncio.wait_for(
                process.communicate(stdin.encode() if stdin is not None else None), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise AssertionError(f"kubectl {' '.join(args)} still running after {timeout}s") from None
        return Result(args, process.returncode or 0, out.decode(), err.decode())

    async def table(self, *args: str) -> tuple[list[str], list[list[str]]]:
        """`kubectl get ...` printed as a table: the header cells and the rows' cells."""
        result = (await self("get", *args)).ok()
        assert "Warning:" not in result.stderr, result.stderr  # e.g. an ambiguous short name in discovery
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        assert lines, f"kubectl get {' '.join(args)} printed nothing; stderr: {result.stderr}"
        # Columns start where their header starts (kubectl aligns them); an absent value is an empty cell.
        starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", lines[0])]
        cells = [[line[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
                 for line in lines]
        return cells[0], cells[1:]

    async def row_until(self, resource: str, name: str, wanted: dict[str, str], timeout: float = 30.0,
                        wide: bool = False) -> tuple[list[str], dict[str, str]]:
        """Poll `kubectl get RESOURCE [-o wide]` until NAME's row shows the wanted column values (a value ending
        in `*` is a prefix); returns the header and the row by column."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            header, rows = await self.table(resource, *(["-o", "wide"] if wide else []))
            by_name = {row[0]: dict(zip(header, row, strict=False)) for row in rows}
            row = by_name.get(name)
            last = (header, rows)
            if row is not None and all(
                    row.get(column, "").startswith(value[:-1]) if value.endswith("*") else row.get(column) == value
                    for column, value in wanted.items()):
                return header, row
            await asyncio.sleep(0.3)
        raise AssertionError(f"timed out after {timeout}s waiting for kubectl get {resource} to show {name} "
                             f"with {wanted}; last table: {last!r}")
