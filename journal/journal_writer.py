"""The journal's writer process: records in, written and fdatasync'd, a count of them back.

    python -m journal.journal_writer <segment> <segment size now> <rotate at bytes>
    (started by journal.journal.Journal; the first two name the file to append to)

Why a process and not a thread: a thread that waits for the disk must take the GIL back
from the event loop every time the disk answers (and around every write and wake-up),
and with a busy loop each of those waits up to the switch interval and preempts the loop.
Measured at 10,000 orders/s on a 2-vCPU VM: fdatasync 0.35 ms in a bare loop, 0.9 ms
(p50) seen by the commit thread; the loop's hand-back 2.2 ms p50 (docs/PERFORMANCE.md).
Here nothing is shared: the server sends bytes down a pipe and reads a count back.

Group commit happens here: while one fdatasync runs, records pile up in the pipe; the next
cycle takes all of them (one read), writes them with one write and syncs once.

stdin:  journal records (journal/records.py), back to back, exactly as they go on disk.
stdout: per fdatasync, REPLY = (records durable so far, records in it, write us, sync us).
Segments rotate at a record boundary once the current one reaches the size given; the
new file is named by the first sequence number of its first record.
"""

from __future__ import annotations

import fcntl
import io
import os
import struct
import sys
import time
from pathlib import Path

from journal.layout import fsync_dir, segment_path
from journal.records import record_spans

REPLY = struct.Struct("<QIII")
# Its niceness, where the system allows it (root, CAP_SYS_NICE, or `ulimit -e` of 30 or
# more): on a machine whose cores are busy, a wake-up of this process (records to write, an
# fdatasync done) otherwise waits for a time slice behind the server and its clients.
PRIORITY = -10
# A read takes what the pipe holds (1 MiB at most: PIPE_SIZE) into a buffer made once.
# os.read(0, 8 MiB) made an 8 MiB bytes each cycle: an mmap, an mremap to the size read
# and a munmap, whose TLB flush interrupts the other core (the server's, often).
PIPE_SIZE = 1024 * 1024


class SegmentWriter:
    def __init__(self, path: Path, size: int, rotate_at: int) -> None:
        self.directory = path.parent
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.size, self.rotate_at = size, rotate_at

    def write(self, data: memoryview) -> None:
        while data:
            data = data[os.write(self.fd, data) :]

    def commit(self, buf: bytearray, records: list[tuple[int, int, int, int]]) -> tuple[int, int]:
        """Write these records (rotating where a segment is full), sync; (write us, sync us)."""
        started = time.perf_counter()
        view, start = memoryview(buf), 0
        for offset, end, first_seq, _ in records:
            if self.size >= self.rotate_at:
                self.write(view[start:offset])
                os.fdatasync(self.fd)
                os.close(self.fd)
                self.fd = os.open(segment_path(self.directory, first_seq), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                fsync_dir(self.directory)
                self.size, start = 0, offset
            self.size += end - offset
        self.write(view[start : records[-1][1]])
        view.release()
        written = time.perf_counter()
        os.fdatasync(self.fd)
        return int((written - started) * 1e6), int((time.perf_counter() - written) * 1e6)


class Pacing:
    """A commit cycle costs the server's loop a read and a release of replies (~0.1-0.3
    ms of CPU) whatever its size, so cycles start at most once per interval, and the
    interval grows with the arrival rate (rate / RATE_PER_MS_OF_INTERVAL, between the
    bounds): at 10,000 orders/s every 0.25 ms at most (an fdatasync takes longer: no
    wait, latency first), at 100,000/s every 2 ms (~200 orders per fsync)."""

    RATE_PER_MS_OF_INTERVAL = 50_000

    def __init__(self, min_interval: float = 0.00025, max_interval: float = 0.002) -> None:
        self.min_interval, self.max_interval = min_interval, max_interval
        self.interval = min_interval
        self.rate = 0.0  # commands per second, smoothed over recent cycles
        self.last_start = 0.0

    def wait(self) -> None:
        wait = self.last_start + self.interval - time.perf_counter()
        if wait > 0:
            time.sleep(wait)  # let more arrive: fewer, larger commits

    def started(self, commands: int) -> None:
        now = time.perf_counter()
        self.rate += 0.2 * (commands / max(now - self.last_start, self.min_interval) - self.rate)
        self.interval = min(max(self.rate / self.RATE_PER_MS_OF_INTERVAL / 1000, self.min_interval), self.max_interval)
        self.last_start = now


def main(argv: list[str]) -> int:
    writer = SegmentWriter(Path(argv[0]), int(argv[1]), int(argv[2]))
    pacing = Pacing()
    try:  # first in line for a core: every ACK waits for this process's wake-ups (docs/PERFORMANCE.md)
        os.nice(PRIORITY)
    except OSError:
        pass  # not allowed (no CAP_SYS_NICE, RLIMIT_NICE below it): the default priority
    try:  # room for ~20 ms of records at 100,000 orders/s while a slow fdatasync runs
        fcntl.fcntl(0, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # a smaller pipe only means the server's transport buffers a little more
    buf = bytearray()
    durable = 0
    out = sys.stdout.buffer
    records_in = io.FileIO(0, closefd=False)
    scratch = memoryview(bytearray(PIPE_SIZE))
    while True:
        pacing.wait()
        n = records_in.readinto(scratch)  # waits for bytes, then takes all there are: the group
        if not n:
            return 0  # the server closed the pipe (or died): a partial record was never acknowledged
        buf += scratch[:n]
        records = record_spans(buf)
        if not records:
            continue
        pacing.started(sum(count for _, _, _, count in records))
        write_us, sync_us = writer.commit(buf, records)
        del buf[: records[-1][1]]
        durable += len(records)
        try:
            out.write(REPLY.pack(durable, len(records), write_us, sync_us))
            out.flush()
        except BrokenPipeError:
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
