"""A provider's levers, named in a plain map and built on first use; the wave each lever
belongs to; and the whole-call wall-clock bound every lever's provider call goes through.

A lever module is imported only when a target needs it, so validating an inventory
or printing help never loads boto3 or the kubernetes client. No registration by
import side effect: the map is the registry.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Any, TypeVar

from killswitch.contract import Mechanism, time_left
from killswitch.errors import RetryableError

T = TypeVar("T")


class Wave(IntEnum):
    """When a lever is pulled within one op: a revoke closes lower waves first, a restore
    opens them in reverse (``Mechanism.wave``; the executor sorts on the number)."""

    EDGE = 0  # flags the serving path reads first: SSM flag, ConfigMap flag, partner API
    ACCESS = 1  # who may call: IAM deny, NetworkPolicy
    CAPACITY = 2  # what serves at all: replicas scaled to zero


class Levers:
    """``name → "module:Class"``; each lever is built once, with its provider, thread-safely
    (the fan-out threads ask for levers concurrently)."""

    def __init__(self, provider: object, table: Mapping[str, str]) -> None:
        self.provider = provider
        self.table = table
        self._built: dict[str, Mechanism] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Mechanism:
        with self._lock:
            if name not in self._built:
                self._built[name] = lever_class(self.table[name])(self.provider)
            return self._built[name]


def lever_class(path: str) -> Callable[[Any], Mechanism]:
    """The class a lever table names (``"module:Class"``), imported now; it is built with
    its provider."""
    module, _, attr = path.partition(":")
    found: Callable[[Any], Mechanism] = getattr(importlib.import_module(module), attr)
    return found


def within(seconds: float, what: str, call: Callable[[], T]) -> T:
    """``call()`` bounded in wall time as a whole: connect, send and the entire reply.

    Socket timeouts bound each read, so a server that drips its reply a byte at a time
    never trips them. Here the call runs in a daemon thread of its own; past ``seconds``
    it is abandoned (its socket closes when its own timeouts do, or with the process) and
    a RetryableError says so: the lever re-reads before it writes again. The op's
    deadline (``time_left``) shortens the bound, so no call outlives its op."""
    left = time_left()
    if left is not None and left < seconds:
        seconds = max(0.05, left)
    done = threading.Event()
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name=f"call: {what}"[:60], daemon=True).start()
    if not done.wait(seconds):
        raise RetryableError(f"{what}: no complete reply within {seconds:g}s")
    if failure:
        raise failure[0]
    return outcome[0]
