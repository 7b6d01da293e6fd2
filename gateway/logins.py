"""How much a password guess costs: per account, whatever the number of connections or
addresses asking, without locking the owner out. No I/O: times are passed in.

- An account's first FREE_FAILURES wrong passwords (within FAILURE_MEMORY seconds of each
  other) cost nothing.
- Past them, that account's password checks are spaced: the next may run SPACING seconds
  after the last, doubling per failure up to MAX_SPACING (20 s: three guesses a minute).
  Attempts queue for their turn in arrival order; at most MAX_QUEUED wait per account, and
  one more is answered `ERR busy` at once, without checking (no guess is spent).
- An address that has logged in to the account before is not spaced (a stranger's guesses
  never keep the owner out), until it has failed FREE_FAILURES times itself.
A success clears the account's failures. Nothing is keyed by address alone: on a shared
address (localhost, a NAT) one user's typos never slow another's logins.
"""

from __future__ import annotations

FREE_FAILURES = 3
SPACING, MAX_SPACING = 1.0, 20.0
FAILURE_MEMORY = 600.0  # seconds without a failure before an account's count is forgotten
MAX_QUEUED = 5  # attempts waiting for their turn, per account
MAX_TRACKED = 100_000  # accounts and (account, address) pairs remembered; past that, start over


class LoginThrottle:
    def __init__(self) -> None:
        self.failures: dict[str, tuple[int, float]] = {}  # account -> (failures, time of the last)
        self.next_check: dict[str, float] = {}  # account -> when its next spaced check may run
        self.queued: dict[str, int] = {}  # account -> attempts waiting for their turn
        self.known: dict[tuple[str, str], int] = {}  # (account, address) that logged in -> its failures since

    def wait(self, account: str, address: str, now: float) -> float | None:
        """Seconds this attempt waits before its password is checked; None: too many wait
        already (answer busy). A caller that waits must call done_waiting() after."""
        count, last = self.failures.get(account, (0, 0.0))
        if now - last > FAILURE_MEMORY:
            count = 0
        if count < FREE_FAILURES or self.known.get((account, address), FREE_FAILURES) < FREE_FAILURES:
            return 0.0
        if self.queued.get(account, 0) >= MAX_QUEUED:
            return None
        ahead = self.queued.get(account, 0)
        start = max(now, self.next_check.get(account, 0.0))
        self.next_check[account] = start + _spacing(count + ahead)  # the turn after this one, as if those ahead fail too
        self.queued[account] = ahead + 1
        return start - now

    def done_waiting(self, account: str) -> None:
        left = self.queued.get(account, 1) - 1
        if left > 0:
            self.queued[account] = left
        else:
            self.queued.pop(account, None)

    def failed(self, account: str, address: str, now: float) -> None:
        self._bound()
        count, last = self.failures.get(account, (0, 0.0))
        count = 1 if now - last > FAILURE_MEMORY else count + 1
        self.failures[account] = (count, now)
        if count >= FREE_FAILURES:  # the next check waits its spacing after this failure
            self.next_check[account] = max(self.next_check.get(account, 0.0), now + _spacing(count))
        if (account, address) in self.known:
            self.known[(account, address)] += 1

    def succeeded(self, account: str, address: str) -> None:
        self._bound()
        self.failures.pop(account, None)
        self.next_check.pop(account, None)
        self.known[(account, address)] = 0

    def _bound(self) -> None:
        if len(self.failures) > MAX_TRACKED:
            self.failures.clear()
            self.next_check.clear()
        if len(self.known) > MAX_TRACKED:
            self.known.clear()


def _spacing(failures: int) -> float:
    return min(SPACING * 2 ** (failures - FREE_FAILURES), MAX_SPACING)
