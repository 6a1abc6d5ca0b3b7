"""Run the simulator on its own event loop in a background thread, for synchronous code.

``SimulatorThread`` is what sync tests and benchmarks use::

    with SimulatorThread(SimulatorConfig(port=0, receipt_delay=0)) as smsc:
        client.connect("127.0.0.1", smsc.port)
        ...
        assert smsc.stats()["accepted"] == 1

Every method hops onto the simulator's loop and waits for the answer, so they
are safe to call from any thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from smpp_gateway.simulator.config import SimulatorConfig
from smpp_gateway.simulator.event_loop import new_event_loop
from smpp_gateway.simulator.records import SubmitRecord
from smpp_gateway.simulator.server import SMSCSimulator

T = TypeVar("T")
START_TIMEOUT = 10.0


class SimulatorThread:
    """An ``SMSCSimulator`` serving from a daemon thread until ``stop()``."""

    def __init__(self, config: SimulatorConfig | None = None, **changes: Any):
        config = config or SimulatorConfig(port=0)
        self.simulator = SMSCSimulator(config, **changes)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> SimulatorThread:
        self._thread = threading.Thread(target=self._run, name="smsc-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT):
            raise RuntimeError("the SMSC simulator did not start")
        if self._error is not None:
            raise RuntimeError("the SMSC simulator did not start") from self._error
        return self

    def _run(self) -> None:
        loop = new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stopped = asyncio.Event()
        try:
            await self.simulator.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stopped.wait()
        await self.simulator.stop()

    def stop(self) -> None:
        """Unbind the clients, close the ports and end the thread."""
        if self._loop is None or self._thread is None or self._stopped is None:
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(START_TIMEOUT)
        self._thread = None

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def call(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``function(*args, **kwargs)`` on the simulator's loop and return its result."""
        assert self._loop is not None, "start() the simulator thread first"
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return future.result(START_TIMEOUT)

    @property
    def port(self) -> int:
        return self.simulator.port

    @property
    def control_port(self) -> int | None:
        return self.simulator.control_port

    def stats(self) -> dict[str, Any]:
        return self.call(self.simulator.stats)

    def submits(self, since: int = 0) -> list[SubmitRecord]:
        """Its accepted submits; also once stopped (read directly: its loop is gone)."""
        if self._thread is None and self._loop is not None:
            return self.simulator.submits_since(since)
        return self.call(self.simulator.submits_since, since)

    def inject_mo(self, src: str, dst: str, text: str, **options: Any) -> int:
        """See ``SMSCSimulator.inject_mo``; returns the number of parts queued."""
        return self.call(self.simulator.inject_mo, src, dst, text, **options)

    def set_config(self, **changes: Any) -> SimulatorConfig:
        return self.call(self.simulator.set_config, **changes)

    def unbind_all(self) -> int:
        return self.call(self.simulator.unbind_all)

    def reset(self) -> None:
        self.call(self.simulator.reset)
