"""A provider's levers, named in a plain map and built on first use; the wave each lever
belongs to; and the whole-call wall-clock bound every lever's provider call goes through.

A lever module is imported only when a target needs it, so validating an inventory
or printing help never loads boto3 or the kubernetes client. No registration by
import side effect: the map is the registry.
"""

from __future__ import annotations

import importlib
import os
import queue
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
    job = _Job(call)
    _RUNNERS.run(job)
    if not job.done.acquire(timeout=seconds):
        raise RetryableError(f"{what}: no complete reply within {seconds:g}s")
    if job.failure is not None:
        raise job.failure
    outcome: T = job.outcome
    return outcome


class _Job:
    """One bounded call: ``done`` is released once it has an outcome (a bare lock is the
    cheapest one-shot signal between two threads)."""

    __slots__ = ("call", "done", "failure", "outcome")

    def __init__(self, call: Callable[[], Any]) -> None:
        self.call = call
        self.done = threading.Lock()
        self.done.acquire()
        self.outcome: Any = None
        self.failure: BaseException | None = None


class _Runners:
    """Daemon threads that run bounded calls, kept for the next call once done: a thread
    per call costs its start and its end on every call. A call abandoned past its bound
    keeps its thread until it ends on its own; another thread takes the next job."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def run(self, job: _Job) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1  # this job is that idle thread's
        self._jobs.put(job)
        if start:
            threading.Thread(target=self._serve, name="bounded call", daemon=True).start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                job.outcome = job.call()
            except BaseException as exc:
                job.failure = exc
            finally:
                job.call = _done
                job.done.release()
            with self._lock:
                self._idle += 1


def _done() -> None:
    """What a finished job holds instead of its call (and the closures it kept alive)."""


_RUNNERS = _Runners()


def _forked() -> None:
    """A forked child has none of its parent's threads: it starts with no idle runner."""
    global _RUNNERS
    _RUNNERS = _Runners()


os.register_at_fork(after_in_child=_forked)
