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
    spread: Callable[[Item], Hashable] | None = None,
) -> Iterator[tuple[Item, Result | BaseException]]:
    """Run ``work`` on every item; yield (item, result or exception) as each finishes.

    Items start in turn across the ``spread`` groups (default: ``key``). Sorted input
    would otherwise hand every worker the same region's items, to wait there on that
    region's cap or rate limit while the other regions sit idle.

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

    pool = ThreadPoolExecutor(max_workers=min(total, max(1, len(items))))
    finished = False
    try:
        futures: dict[Future[Result], Item] = {
            pool.submit(gated, i): i for i in _in_turn(items, spread or key)
        }
        for future in as_completed(futures):
            error = future.exception()
            yield futures[future], (error if error is not None else future.result())
        finished = True
    finally:
        # Cut short (Ctrl-C, the caller stopped): start nothing more and do not wait for
        # calls in flight; each is bounded by its own deadline and ends on its own.
        pool.shutdown(wait=finished, cancel_futures=not finished)


def _in_turn(items: Sequence[Item], group: Callable[[Item], Hashable]) -> list[Item]:
    """The first item of every group, then the second of every group, and so on."""
    groups: dict[Hashable, list[Item]] = {}
    for item in items:
        groups.setdefault(group(item), []).append(item)
    ordered: list[Item] = []
    for i in range(max((len(g) for g in groups.values()), default=0)):
        ordered += [g[i] for g in groups.values() if i < len(g)]
    return ordered
