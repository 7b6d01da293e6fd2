"""A histogram of non-negative integers (microseconds, batch sizes) in fixed memory.

Buckets are 1/16 of a power of two wide (exact below 32), so any percentile is known to
within ~6% from 1 us to days, in 600 counters; recording is a bit_length and an add. The
server records from the event loop and from the journal's commit thread: each histogram
has one writer, and readers (a report) accept a count that is one record stale.
"""

from __future__ import annotations

from itertools import accumulate

SUB_BITS = 4
SUB = 1 << SUB_BITS  # buckets per power of two
EXACT = 2 * SUB  # values below this have a bucket each
BUCKETS = 64 * SUB


def bucket_of(value: int) -> int:
    if value < EXACT:
        return value if value > 0 else 0
    shift = value.bit_length() - SUB_BITS - 1
    return shift * SUB + (value >> shift)


def upper_bound(bucket: int) -> int:
    """The largest value that falls in `bucket`."""
    if bucket < EXACT:
        return bucket
    shift = bucket // SUB - 1
    return ((bucket % SUB + SUB + 1) << shift) - 1


class Histogram:
    __slots__ = ("name", "doc", "counts", "count", "total", "max")

    def __init__(self, name: str = "", doc: str = "") -> None:
        self.name, self.doc = name, doc
        self.counts = [0] * BUCKETS
        self.count = self.total = self.max = 0

    def record(self, value: int) -> None:
        if value < EXACT:  # bucket_of, inlined: this runs for every socket read
            if value < 0:
                value = 0
            self.counts[value] += 1
        else:
            shift = value.bit_length() - SUB_BITS - 1
            self.counts[shift * SUB + (value >> shift)] += 1
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value

    def percentile(self, p: float) -> int:
        """The smallest bucket bound with at least p% of the values at or below it (0 if empty)."""
        if not self.count:
            return 0
        rank = max(1, -(-self.count * p // 100))  # ceil, at least the first value
        seen = 0
        for bucket, n in enumerate(self.counts):
            seen += n
            if seen >= rank:
                return min(upper_bound(bucket), self.max)
        return self.max

    def below(self, bounds: list[int]) -> list[int]:
        """How many values are < each bound, in one pass; exact where a bound starts a
        bucket (below 32, or a power of two): /metrics asks at powers of two."""
        running = list(accumulate(self.counts, initial=0))  # running[b]: values in buckets < b
        return [running[bucket_of(bound)] for bound in bounds]

    def reset(self) -> None:
        self.counts = [0] * BUCKETS
        self.count = self.total = self.max = 0

    def summary(self) -> dict[str, int]:
        return {
            "count": self.count, "p50": self.percentile(50), "p99": self.percentile(99), "p99.9": self.percentile(99.9),
            "max": self.max, "mean": self.total // self.count if self.count else 0,
        }  # fmt: skip
