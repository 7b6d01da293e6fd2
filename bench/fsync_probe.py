"""The physical floor of a durable ACK: 4 KiB append + fdatasync latency on a directory's disk."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def fsync_latency_us(directory: Path, n: int = 300) -> list[float]:
    directory.mkdir(parents=True, exist_ok=True)
    block = os.urandom(4096)
    samples = []
    with tempfile.NamedTemporaryFile(dir=directory, prefix="fsync-probe-") as f:
        fd = f.fileno()
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            samples.append((time.perf_counter() - t0) * 1e6)
    return sorted(samples)
