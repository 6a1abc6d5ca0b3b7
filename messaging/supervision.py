"""Supervision: a process's long-lived tasks, and what happens when one dies.

``manage.py serve``, ``manage.py smpp_worker`` and ``manage.py webhook_sender``
each run tasks that must live as long as the process: the SMPP worker, the
webhook sender, the demo's simulator (and, in ``serve``, daphne's listeners).
The rule, in one place: a task that ends with an exception, or ends at all
before the process was asked to stop, is never silent. It is

1. logged at CRITICAL with its traceback (logger ``messaging.supervision``);
2. marked on the process: ``/readyz`` served by this process answers 503 at once
   (``not_ready_reason``), without asking the store;
3. followed by a clean stop of the other tasks (the worker drains its window and
   unbinds as on SIGTERM, each task within its own bound);
4. the process exits with ``EXIT_TASK_DIED`` (70, ``EX_SOFTWARE``), so that
   systemd, Docker's restart policy or Kubernetes starts it again.

A stop asked for by SIGINT/SIGTERM still ends with exit 0.

The process-wide flag is module state on purpose: one process, one verdict,
read by the readiness view of the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

logger = logging.getLogger(__name__)

# sysexits.h EX_SOFTWARE: "an internal software error". Any non-zero code makes a
# supervisor restart us; a distinct one tells this case apart in its records.
EXIT_TASK_DIED = 70

# Set once, by the first death; read by /readyz of this process.
_not_ready_reason: str | None = None


def mark_not_ready(reason: str) -> None:
    """From now on this process is not ready (the first reason is kept)."""
    global _not_ready_reason
    if _not_ready_reason is None:
        _not_ready_reason = reason


def not_ready_reason() -> str | None:
    """Why this process is not ready, or None while nothing has died."""
    return _not_ready_reason


def clear_not_ready() -> None:
    """Forget the verdict (for tests that run several supervisors in one process)."""
    global _not_ready_reason
    _not_ready_reason = None


class TaskEnded(RuntimeError):
    """A task that must run until the process stops returned on its own."""


class InjectedTaskDeath(RuntimeError):
    """Raised by the test-only task of ``SMSAPI_TEST_TASK_DEATH_FILE``."""


@dataclass
class LongLivedTask:
    """One task of the process, and how to ask it to end cleanly."""

    name: str
    run: Callable[[], Awaitable[object]]
    # Asks the task to end cleanly (e.g. ``SMPPWorker.stop``); None: it is cancelled.
    stop: Callable[[], object] | None = None
    # Seconds the task gets to end after ``stop``; past it, it is cancelled.
    stop_timeout: float = 10.0
    # True for a one-shot start (the simulator's ``start`` returns once listening).
    may_end: bool = False


class Supervisor:
    """Runs the long-lived tasks of one process; the first death stops them all.

    ``on_failure`` is called once, on the event loop, after a death was logged
    and the process marked not ready: the command stops its loop there
    (``reactor.stop`` in ``serve``). Commands on ``asyncio.run`` use
    ``run_supervised`` instead, which waits on ``wait`` and calls ``stop_all``.
    """

    def __init__(self, process: str, on_failure: Callable[[], object] | None = None) -> None:
        self.process = process
        self.on_failure = on_failure
        self.failure: str | None = None
        self.stop_requested = False
        self._specs: dict[str, LongLivedTask] = {}
        self._tasks: dict[str, asyncio.Future] = {}
        self._cleanups: list[Callable[[], Awaitable[object]]] = []
        self._wake = asyncio.Event()

    @property
    def exit_code(self) -> int:
        return EXIT_TASK_DIED if self.failure else 0

    def start(self, spec: LongLivedTask) -> asyncio.Future:
        """Start ``spec`` on the running loop and watch it."""
        task = asyncio.ensure_future(spec.run())
        self._specs[spec.name] = spec
        self._tasks[spec.name] = task
        task.add_done_callback(lambda done: self._ended(spec, done))
        return task

    def start_all(self, specs: Iterable[LongLivedTask]) -> None:
        """Start every task, plus the test-only dying one when the setting asks."""
        specs = list(specs)
        for spec in specs:
            self.start(spec)
        logger.info("%s: running %s", self.process, ", ".join(s.name for s in specs) or "nothing")
        trigger = getattr(settings, "SMSAPI_TEST_TASK_DEATH_FILE", "")
        if trigger:
            self.start(dying_task_for_tests(Path(trigger)))

    def add_cleanup(self, cleanup: Callable[[], Awaitable[object]]) -> None:
        """Awaited by ``stop_all`` once every task has ended (e.g. the simulator's stop)."""
        self._cleanups.append(cleanup)

    def request_stop(self) -> None:
        """A clean stop (SIGINT, SIGTERM): tasks that end now have not died."""
        self.stop_requested = True
        self._wake.set()

    def fail(self, name: str, error: BaseException | str) -> None:
        """Record the death of ``name``: log, mark not ready, tell the command."""
        if self.failure is not None:  # the first death tells the story; later ones are echoes
            if isinstance(error, BaseException):
                logger.error("%s: task %s also ended: %r", self.process, name, error)
            return
        if isinstance(error, BaseException):
            summary = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            exc_info: BaseException | None = error
        else:
            summary, exc_info = error, None
        self.failure = f"task {name} of {self.process} died ({summary})"
        mark_not_ready(f"this process is stopping: {self.failure}")
        logger.critical(
            "%s: task %s died unexpectedly: %s; stopping the process (exit %d) so that its "
            "supervisor restarts it",
            self.process,
            name,
            summary,
            EXIT_TASK_DIED,
            exc_info=exc_info,
        )
        self._wake.set()
        if self.on_failure is not None:
            self.on_failure()

    def _ended(self, spec: LongLivedTask, task: asyncio.Future) -> None:
        if task.cancelled():
            if not self.stop_requested and self.failure is None:
                self.fail(spec.name, TaskEnded(f"{spec.name} was cancelled"))
            return
        error = task.exception()
        if error is not None:
            self.fail(spec.name, error)
        elif not (spec.may_end or self.stop_requested or self.failure is not None):
            self.fail(spec.name, TaskEnded(f"{spec.name} returned while the process runs"))

    async def wait(self) -> None:
        """Until a stop is requested or a task dies."""
        await self._wake.wait()

    async def stop_all(self) -> None:
        """Ask every task to end, give each its bound, then cancel what is left.

        The tasks stop together (the worker drains while the sender finishes its
        POSTs); then the clean-ups run in order. Never raises: a stop that fails
        is logged and the next one still runs.
        """
        waits = []
        for name, task in self._tasks.items():
            spec = self._specs[name]
            if task.done():
                continue
            if spec.stop is None:
                task.cancel()
            else:
                try:
                    spec.stop()
                except Exception:
                    logger.exception("%s: could not ask %s to stop", self.process, name)
                    task.cancel()
            waits.append(self._bounded_end(spec, task))
        await asyncio.gather(*waits)
        for cleanup in self._cleanups:
            try:
                await cleanup()
            except Exception:
                logger.exception("%s: a clean-up failed", self.process)

    async def _bounded_end(self, spec: LongLivedTask, task: asyncio.Future) -> None:
        done, _ = await asyncio.wait([task], timeout=spec.stop_timeout)
        if done:
            return
        logger.error(
            "%s: %s did not stop within %g s; cancelled", self.process, spec.name, spec.stop_timeout
        )
        task.cancel()
        await asyncio.wait([task], timeout=1.0)


def dying_task_for_tests(trigger: Path) -> LongLivedTask:
    """Test only (``SMSAPI_TEST_TASK_DEATH_FILE``): a task that raises once ``trigger`` exists.

    It lets the test suite watch a real process handle a real death (log, 503,
    clean stop of the others, exit code) at the moment the test chooses,
    without touching the code of the worker or the sender. Never set it in
    production.
    """

    async def die() -> None:
        while not trigger.exists():
            await asyncio.sleep(0.05)
        raise InjectedTaskDeath(f"{trigger} appeared (SMSAPI_TEST_TASK_DEATH_FILE): this task dies")

    return LongLivedTask(name="test-task-death", run=die)


async def run_supervised(process: str, specs: Iterable[LongLivedTask]) -> int:
    """For commands on ``asyncio.run``: run ``specs`` until SIGINT/SIGTERM or a death.

    Returns the exit code: 0 after a requested stop, ``EXIT_TASK_DIED`` after a death.
    """
    supervisor = Supervisor(process)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.request_stop)
    try:
        supervisor.start_all(specs)
        await supervisor.wait()
        await supervisor.stop_all()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
    return supervisor.exit_code
