"""Micro-batching: concurrent requests are gathered into one forward pass and answered one by one.

A request is a list of inputs (texts for a classifier or an assistant, one query for a
recommender); the model's ``predict`` gets the inputs of all gathered requests and returns one
output per input. An exception instance in place of an output fails only that input's request
(with that error: a recommender's unknown history is a 422, not a failed batch).

Policy: the worker takes every request already waiting (up to ``max_batch`` inputs). When it found
company (more than one request), it waits up to ``max_wait_ms`` for more, since load is high; a
lone request runs at once, so a quiet service adds no batching delay. The model runs in one
dedicated thread, so the event loop stays free to accept requests meanwhile.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ModelFailure, Overloaded

log = logging.getLogger(__name__)


@dataclass
class _Item:
    inputs: list[Any]
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Gather, run once, answer individually.

    Args:
        predict: ``list of inputs -> one output per input`` (a list, or an array with one row per
            input, e.g. probabilities); run in the worker thread.
        max_batch: most inputs per forward pass.
        max_wait_ms: how long a forming batch may wait for more requests under load.
        max_queue: most requests waiting; beyond it ``submit`` raises :class:`Overloaded`.
        on_batch: called with the number of inputs of every batch run (metrics).
    """

    def __init__(self, predict: Callable[[list[Any]], Sequence[Any] | np.ndarray], max_batch: int = 64, max_wait_ms: float = 5.0,
                 max_queue: int = 1024, on_batch: Callable[[int], None] | None = None):
        self.predict = predict
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="niche-model")
        self.accepting = True

    @property
    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def run_exclusive(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the model thread (e.g. an attention map), serialized with the batches."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def submit(self, inputs: list[Any]) -> Any:
        """The outputs for ``inputs`` (a slice of what ``predict`` returned for the whole batch)."""
        if not self.accepting or self._queue is None:
            raise Overloaded("the model is being replaced; retry", retry_after=1)
        fut = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Item(inputs, fut))
        except asyncio.QueueFull:
            raise Overloaded(f"request queue is full ({self.max_queue} waiting); retry shortly", retry_after=1) from None
        return await fut

    async def drain_and_stop(self) -> None:
        """Stop accepting, finish everything queued, then stop the worker (used on reload)."""
        self.accepting = False
        if self._queue is not None:
            await self._queue.join()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    async def _run(self) -> None:
        assert self._queue is not None
        q = self._queue
        loop = asyncio.get_running_loop()
        while True:
            first = await q.get()
            batch = [first]
            n = len(first.inputs)
            while n < self.max_batch and not q.empty():  # everything already waiting
                item = q.get_nowait()
                batch.append(item)
                n += len(item.inputs)
            if len(batch) > 1 and n < self.max_batch and self.max_wait > 0:  # under load: let the batch fill
                deadline = loop.time() + self.max_wait
                while n < self.max_batch:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(q.get(), timeout)
                    except (asyncio.TimeoutError, TimeoutError):
                        break
                    batch.append(item)
                    n += len(item.inputs)
            inputs = [x for it in batch for x in it.inputs]
            try:
                out = await loop.run_in_executor(self._pool, self.predict, inputs)
                if self.on_batch:
                    self.on_batch(len(inputs))
                start = 0
                for it in batch:
                    part = out[start: start + len(it.inputs)]
                    start += len(it.inputs)
                    if it.future.done():
                        continue
                    failed = next((x for x in part if isinstance(x, BaseException)), None) if isinstance(part, list) else None
                    if failed is not None:
                        it.future.set_exception(failed)
                    else:
                        it.future.set_result(part)
            except Exception as e:  # the model failed: fail these requests, keep serving
                log.exception("model failure on a batch of %d inputs", len(inputs))
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(ModelFailure(f"the model failed on this batch ({type(e).__name__})"))
            finally:
                for _ in batch:
                    q.task_done()
