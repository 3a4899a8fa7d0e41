"""Bounded parallel fan-out: a global cap and a cap per provider-region."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def fan_out(
    items: Sequence[Item],
    work: Callable[[Item], Result],
    *,
    key: Callable[[Item], Hashable],
    total: int,
    per_key: int,
) -> Iterator[tuple[Item, Result | BaseException]]:
    """Run ``work`` on every item; yield (item, result or exception) as each finishes.

    ``total == 1`` runs serially in this thread, in order: the debugging mode.
    """
    if total <= 1:
        for item in items:
            try:
                yield item, work(item)
            except Exception as exc:
                yield item, exc
        return
    gates: dict[Hashable, threading.Semaphore] = {}
    for item in items:
        gates.setdefault(key(item), threading.Semaphore(per_key))

    def gated(item: Item) -> Result:
        with gates[key(item)]:
            return work(item)

    with ThreadPoolExecutor(max_workers=min(total, max(1, len(items)))) as pool:
        futures: dict[Future[Result], Item] = {pool.submit(gated, i): i for i in items}
        for future in as_completed(futures):
            error = future.exception()
            yield futures[future], (error if error is not None else future.result())
