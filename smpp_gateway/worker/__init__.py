"""The SMPP worker: moves parts from the store to the SMSC and answers back into the store.

It owns one bind (``SMPPSession``) at a time and keeps its window full: it
claims queued parts in batches ahead of need (the next batch is read while
this one is sent), submits them without waiting, and writes responses,
receipts and incoming messages back in batches, one transaction per batch. A
deliver_sm is answered only after what it carried is committed.

The parts, one job each (each testable with a fake session):

- ``config``: ``WorkerConfig``, what the worker is told.
- ``link``: the bind, its backoff, state, health and stall (``Link``).
- ``feeder``: what to claim and when to send it (``Feeder`` and its policies).
- ``answers``: submit_sm_resp (or none in time) turned into results (``SubmitAnswers``).
- ``receipt_wait``: accepted results waiting a moment for their receipt (``ReceiptWait``).
- ``intake``: deliver_sm / data_sm taken in (``IncomingDeliveries``).
- ``results``: what is pending, written in batches (``Pending``, ``ResultWriter``).
- ``upkeep``: expiry, leases, heartbeat; /v1/query's questions.
- ``lifecycle``: ``SMPPWorker``, which puts them together and runs them; its store work
  runs in ``messaging.orm_thread.DatabaseThread`` s (one on SQLite, two on PostgreSQL).
"""

from smpp_gateway.worker.config import WorkerConfig
from smpp_gateway.worker.lifecycle import SMPPWorker, WorkerTaskDied

__all__ = ["SMPPWorker", "WorkerConfig", "WorkerTaskDied"]
