"""SpinPolicy: whether to busy-poll for an event instead of sleeping until it comes.

The client busy-polls for a reply (see ``client.py``); the server, after serving a
request, busy-polls for the next one (see ``server.py``). Both learn from how their last
spins ended whether spinning pays now.
"""

from __future__ import annotations

import time

__all__ = ["MAX_SPIN_PAUSE", "MIN_SPIN_PAUSE", "SpinPolicy"]

#: After a spin that saw nothing, spinning stops for a pause (seconds) that starts at
#: MIN_SPIN_PAUSE and doubles with each wasted spin up to MAX_SPIN_PAUSE (and halves with
#: each spin that catches its event).
MIN_SPIN_PAUSE = 0.001
MAX_SPIN_PAUSE = 1.0


class SpinPolicy:
    """Whether to busy-poll for an event that often comes within microseconds, learned
    from how the last spins ended.

    Spinning pays where the event comes within the spin (the reply of a server with a core
    to itself, the next request of a client sending back to back): the waiting thread never
    sleeps, so nothing has to wake it, which on a virtual machine costs tens of
    microseconds per hop. It wastes CPU where the event comes later (cores shared with busy
    work, many threads taking turns at one interpreter, a client that works between its
    requests). So a spin that sees nothing stops spinning for a pause, twice as long after
    each such spin (from :data:`MIN_SPIN_PAUSE` up to :data:`MAX_SPIN_PAUSE`); every spin
    that catches its event halves the next pause (a pause already running is left to end).
    Where spins keep failing, one spin a second still tries.

    The pause is a time, not a number of events, because what decides whether a spin pays
    (the load on the cores, the pace of requests) changes with time: a process that waits
    seldom (a node at rest, a heartbeat every few seconds) spins again within a second of a
    busy spell, instead of after thousands of its waits.

    It is updated without a lock; a race costs one spin more or less.
    """

    __slots__ = ("pause", "resume_at")

    def __init__(self) -> None:
        self.pause = MIN_SPIN_PAUSE  # how long the next wasted spin stops spinning for
        self.resume_at = 0.0  # time.monotonic() when spinning resumes; 0.0: not paused

    def should_spin(self) -> bool:
        resume_at = self.resume_at
        return not resume_at or time.monotonic() >= resume_at

    def spun(self, caught: bool) -> None:
        """Learn from a spin that caught its event (``caught``) or saw nothing."""
        if caught:
            # A pause that another thread's wasted spin set meanwhile keeps running: where
            # many threads share the process, ending it at every catch would keep them all
            # spinning while most spins miss. One that is over is cleared, so that callers
            # stop reading the clock.
            resume_at = self.resume_at
            if resume_at and time.monotonic() >= resume_at:
                self.resume_at = 0.0
            if self.pause > MIN_SPIN_PAUSE:
                self.pause = max(MIN_SPIN_PAUSE, self.pause / 2)
        else:
            self.resume_at = time.monotonic() + self.pause
            self.pause = min(self.pause * 2, MAX_SPIN_PAUSE)
