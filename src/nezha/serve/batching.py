"""Dynamic batching: requests that arrive together run as one forward pass.

One worker thread owns the model. It takes the oldest waiting request, then every request already queued, and, when
others were queued (the server is busy), keeps adding arrivals until the batch holds ``max_batch`` inputs or
``max_wait_s`` has passed since it took the first; then it answers them all with one pipeline call. A lone request
never waits (no added latency at low load); under load, requests that arrive during a forward pass form the next
batch. With ``max_batch=1`` it serves one request at a time.
A batch that fails is retried request by request, so one bad request never fails its neighbours.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

logger = logging.getLogger("nezha")


@dataclass
class _Job:
    items: list
    future: Future


class DynamicBatcher:
    """Feeds ``predict(items) -> answers`` from a queue of requests; :meth:`submit` returns a Future."""

    def __init__(self, predict: Callable[[Sequence], list], max_batch: int = 32, max_wait_s: float = 0.005):
        if max_batch <= 0:
            raise ValueError(f"max_batch must be positive, got {max_batch}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.predict, self.max_batch, self.max_wait_s = predict, max_batch, max_wait_s
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="nezha-batcher", daemon=True)
        self.batches = 0  # forward calls made, for /info and the benchmark
        self._thread.start()

    def submit(self, items: list) -> Future:
        job = _Job(list(items), Future())
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Finish the queued requests, then stop the worker."""
        self._queue.put(None)
        self._thread.join()

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        jobs, size = [first], len(first.items)
        busy = not self._queue.empty()
        deadline = time.monotonic() + (self.max_wait_s if busy else 0.0)
        while size < self.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            size += len(job.items)
        return jobs, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            jobs, stop = self._collect(first)
            self._run(jobs)

    def _run(self, jobs: list[_Job]) -> None:
        items = [x for j in jobs for x in j.items]
        self.batches += 1
        try:
            answers = self.predict(items)
        except Exception as e:  # noqa: BLE001  (answered per request below)
            if len(jobs) == 1:
                jobs[0].future.set_exception(e)
                return
            for job in jobs:
                self._run([job])
            return
        start = 0
        for job in jobs:
            job.future.set_result(answers[start : start + len(job.items)])
            start += len(job.items)
