"""sequence_number allocation: 1, 2, ... ``MAX_SEQUENCE``, then 1 again (SMPP 3.4, 3.2).

Each side of a link numbers its own requests; a response carries the number of
its request. Both the client session and the simulator's SMSC session take
theirs from here.
"""

from __future__ import annotations

from smpp.constants import MAX_SEQUENCE


class SequenceNumbers:
    """The sequence numbers of one side of one link, wrapping after ``MAX_SEQUENCE``."""

    __slots__ = ("last",)

    def __init__(self, last: int = 0):
        self.last = last  # the number given out last (0: none yet)

    def next(self) -> int:
        """The next number: never 0, never above ``MAX_SEQUENCE``."""
        self.last = self.last % MAX_SEQUENCE + 1
        return self.last
