"""The simulator's log of accepted submits: what tests inspect, query_sm finds, and
what tells a duplicate (the same content to the same handset again) from a new message."""

from __future__ import annotations

import itertools
from collections import deque

from smpp_gateway.simulator.records import SubmitRecord


class SubmitLog:
    """The last ``limit`` accepted submits, in arrival order, by index and by message id.

    A record's ``index`` counts every submit ever logged (from 0), so a client can
    ask for "everything since" across records already dropped.
    """

    def __init__(self) -> None:
        self._records: deque[SubmitRecord] = deque()
        self._first_index = 0  # index of _records[0]: older records were dropped
        self._by_id: dict[str, SubmitRecord] = {}
        self._seen: dict[int, int] = {}  # content key -> how many records carry it

    def __len__(self) -> int:
        return len(self._records)

    @property
    def next_index(self) -> int:
        """The ``index`` the next logged submit will get."""
        return self._first_index + len(self._records)

    def all(self) -> list[SubmitRecord]:
        return list(self._records)

    def since(self, index: int, limit: int | None = None) -> list[SubmitRecord]:
        """Records whose ``index`` is ``index`` or later (at most ``limit``)."""
        start = max(0, index - self._first_index)
        stop = None if limit is None else start + limit
        return list(itertools.islice(self._records, start, stop))

    def find(self, message_id: str) -> SubmitRecord | None:
        """The submit answered with ``message_id`` (in the form submit_sm_resp carried)."""
        return self._by_id.get(message_id)

    def add(self, record: SubmitRecord, limit: int) -> None:
        """Log ``record``, marked a duplicate if a logged one has the same content (the
        destination, the text and the SAR fields); beyond ``limit`` records, the oldest
        is forgotten."""
        key = hash(
            (
                record.destination_addr,
                record.short_message,
                record.message_payload,
                record.sar_msg_ref_num,
                record.sar_total_segments,
                record.sar_segment_seqnum,
            )
        )
        seen = self._seen.get(key, 0)
        self._seen[key] = seen + 1
        record.dup_key = key
        record.duplicate = bool(seen)
        self._records.append(record)
        self._by_id[record.id_str] = record
        if len(self._records) > limit:
            self._forget(self._records.popleft())

    def _forget(self, record: SubmitRecord) -> None:
        self._first_index += 1
        if self._by_id.get(record.id_str) is record:
            del self._by_id[record.id_str]
        left = self._seen.get(record.dup_key, 1) - 1
        if left:
            self._seen[record.dup_key] = left
        else:
            self._seen.pop(record.dup_key, None)

    def clear(self) -> None:
        """Forget every record; indexes go on from where they were."""
        self._first_index += len(self._records)
        self._records.clear()
        self._by_id.clear()
        self._seen.clear()
