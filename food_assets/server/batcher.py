"""Dynamic batching: requests that arrive together run as one batch.

Each request puts its preprocessed tensor on a queue and awaits a future. One collector task
takes the first waiting item, then whatever else arrives within `max_wait_ms` (or until
`max_batch` items), and runs the batch on one inference thread; while that batch runs the next
one is collected, so the model is never idle while requests wait. A request is preprocessed for
the model that was current when it arrived and is answered by that same model: a batch that
straddles a swap runs as one group per model, so a hot swap never fails a request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from food_assets.server.models import ServedModel


@dataclass
class _Item:
    tensor: torch.Tensor
    model: ServedModel
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Collects tensors into batches of at most `max_batch`, waiting at most `max_wait_ms` for
    a batch to fill after its first item arrived.

    Args:
        max_batch: the largest batch the model runs.
        max_wait_ms: how long the first request of a batch may wait for company.
        on_batch: called with each batch size (metrics).
    """

    def __init__(
        self,
        *,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError("max_batch must be >= 1 and max_wait_ms >= 0")
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        # One thread: batches run one after another (the model uses every core already).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self) -> None:
        """Answer what is queued, then stop (after the server stopped taking requests)."""
        if self._task is None or self._queue is None:
            return
        while not self._queue.empty():
            await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._executor.shutdown(wait=True)

    async def submit(self, tensor: torch.Tensor, model: ServedModel) -> np.ndarray:
        """The probability row for one preprocessed image, answered by `model`."""
        if self._queue is None:
            raise RuntimeError("Batcher.start() was not called")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Item(tensor, model, future))
        return await future

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
            await self._run(batch)

    async def _run(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        if self.on_batch is not None:
            self.on_batch(len(batch))
        groups: dict[int, list[_Item]] = {}
        for item in batch:
            groups.setdefault(id(item.model), []).append(item)
        for items in groups.values():
            predictor = items[0].model.predictor
            x = torch.stack([i.tensor for i in items])
            try:
                probs = await loop.run_in_executor(self._executor, predictor.predict_tensor, x)
            except Exception as exc:  # the model failed: every request of the group learns it
                for item in items:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            for item, row in zip(items, probs, strict=True):
                if not item.future.done():  # the client may have gone away
                    item.future.set_result(row)
