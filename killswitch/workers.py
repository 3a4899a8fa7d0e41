"""Worker processes for a large fan-out: the lever calls of one command spread over the
operator's cores.

One interpreter runs one thread at a time, and a provider SDK spends milliseconds of
CPU per call (botocore: serialising, signing, parsing), so thousands of calls in one
process are bounded by CPU, not by the round trip. Here the parent process keeps
everything that decides: the lease, the journal, the plan, retries' outcomes, the
deadline, the progress callback. Each worker process only calls providers: it owns
the clients and the rate-limit buckets of its share of the targets (every target of
one affinity group goes to one worker, so a bucket is never split), runs each call
with the same retries and deadline as the threads would (killswitch/calls.py), and
sends the outcome back.

- **Fencing.** A worker's write asks the parent right before it leaves (the lever's
  ``ctx.fence``): the parent runs its own fence (reads the lease from the store) and
  answers. No answer, or a parent gone, is a refusal.
- **A worker that dies** (killed, crashed) fails every call it had: the parent
  records those targets failed (unknown), never verified, and `ops resume` reads them
  again. One that stops answering is killed once the op's deadline has passed.
- **Ctrl-C** reaches the parent only: workers ignore SIGINT, and exit as soon as the
  parent is gone (their stdin closes).

Messages are pickled over the worker's stdin and stdout (multiprocessing's framing);
an apply's message comes back with its read-backs (the worker reads each target right
after the write, as the executor would next);
the worker's own stdout is sent to stderr, so nothing it prints can reach ours.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import structlog

from killswitch.contract import ApplyContext
from killswitch.domain import Access, Change, Observed, Target
from killswitch.errors import (
    DeadlinePassed,
    KillswitchError,
    LeaseLost,
    PermanentError,
    ProviderError,
    RetryableError,
)

if TYPE_CHECKING:
    from killswitch.inventory import Inventory, RetryPolicy

log = structlog.get_logger("killswitch.workers")

ENV = "KILLSWITCH_WORKERS"  # a number forces that many workers (0: threads), whatever the plan
MIN_TARGETS = 1000  # below this, a worker's start-up costs more than it saves
MAX_WORKERS = 8
GRACE_SECONDS = 5.0  # past the op's deadline, a worker that has not answered is stopped


def how_many(setting: int | str, targets: int) -> int:
    """Worker processes for a fan-out over ``targets``; 0: threads in this process.

    ``$KILLSWITCH_WORKERS`` decides when set; else ``policy.workers``: a number, or
    ``auto``: on for a plan of at least MIN_TARGETS targets when at least two cores are
    free (the cores this process may use, less the load average), one worker per free
    core but one (the parent's), at most MAX_WORKERS."""
    forced = os.environ.get(ENV, "").strip()
    if forced:
        try:
            return max(0, min(64, int(forced)))
        except ValueError:
            log.warning("ignored: not a number", variable=ENV, value=forced)
    if setting != "auto":
        return int(setting)
    if targets < MIN_TARGETS:
        return 0
    return max(0, min(MAX_WORKERS, free_cores() - 1))


def free_cores() -> int:
    """Cores this process may run on, less the 1-minute load average, rounded down."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return int(cores - load)


# -- errors across the pipe ------------------------------------------------------------

_KNOWN: dict[str, type[KillswitchError]] = {
    cls.__name__: cls
    for cls in (
        KillswitchError,
        ProviderError,
        RetryableError,
        PermanentError,
        DeadlinePassed,
        LeaseLost,
    )
}


class WorkerBug(Exception):
    """An exception that is not a KillswitchError, raised in a worker: a bug, reported as
    the worker saw it (its repr)."""

    def __repr__(self) -> str:
        return str(self.args[0])


Failure = tuple[str, str, float | None]  # class name, message, retry_after


def encode(exc: BaseException) -> Failure:
    name = type(exc).__name__
    if isinstance(exc, KillswitchError) and name in _KNOWN:
        return name, str(exc), getattr(exc, "retry_after", None)
    if isinstance(exc, KillswitchError):  # a subclass we do not rebuild: its nearest kind
        base = next(c for c in type(exc).__mro__ if c.__name__ in _KNOWN)
        return base.__name__, str(exc), getattr(exc, "retry_after", None)
    return "", repr(exc), None


def decode(failure: Failure) -> Exception:
    name, message, retry_after = failure
    cls = _KNOWN.get(name)
    if cls is None:
        return WorkerBug(message)
    if issubclass(cls, ProviderError):
        return cls(message, retry_after=retry_after)
    return cls(message)


# -- the parent's side ---------------------------------------------------------------


@dataclass
class _Call:
    """One call sent to a worker, until its outcome comes back."""

    worker: _Worker
    fence: Callable[[], None] | None
    done: threading.Lock = field(default_factory=threading.Lock)
    outcome: Any = None
    failure: Exception | None = None


class _Worker:
    """One worker process, its pipe, and the calls it has not answered yet."""

    def __init__(self, index: int, pool: Pool) -> None:
        self.index, self.pool = index, pool
        env = dict(os.environ)
        # The worker imports what this process imports (a checkout on sys.path, plug-ins).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "killswitch.workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._send_to = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self._read_from = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self._send_lock = threading.Lock()
        self.calls: dict[int, _Call] = {}
        self.gone: str | None = None  # why this worker can take no more calls
        self._reader = threading.Thread(
            target=self._read, name=f"worker {index} replies", daemon=True
        )

    def start(self, hello: tuple[Any, ...]) -> None:
        self.send(hello)
        self._reader.start()

    def send(self, message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        with self._send_lock:
            self._send_to.send_bytes(data)

    def submit(self, call_id: int, call: _Call, message: tuple[Any, ...]) -> None:
        with self.pool.lock:
            if self.gone is not None:
                call.failure = KillswitchError(self.gone)
                call.done.release()
                return
            self.calls[call_id] = call
        try:
            self.send(message)
        except OSError as exc:
            self.lost(f"worker process {self.index} cannot be reached ({exc})")

    def _read(self) -> None:
        while True:
            try:
                message = pickle.loads(self._read_from.recv_bytes())
            except (EOFError, OSError):
                code = self.process.wait()
                how = f"signal {-code}" if code < 0 else f"exit code {code}"
                self.lost(f"worker process {self.index} ended ({how})")
                return
            kind = message[0]
            if kind == "done":
                _, call_id, ok, payload = message
                with self.pool.lock:
                    call = self.calls.pop(call_id, None)
                if call is None:
                    continue  # given up on already
                if ok:
                    call.outcome = payload
                else:
                    call.failure = decode(payload)
                call.done.release()
            elif kind == "fence":
                _, fence_id, call_id = message
                self.pool.fences.submit(self._fence, fence_id, call_id)

    def _fence(self, fence_id: int, call_id: int) -> None:
        """A worker's write asks: does our op still hold the lease?"""
        with self.pool.lock:
            call = self.calls.get(call_id)
        failure: Failure | None = None
        try:
            if call is None or call.fence is None:
                raise LeaseLost("the write's call is no longer awaited: refused")
            call.fence()
        except Exception as exc:
            failure = encode(exc)
        with contextlib.suppress(OSError):  # the worker is gone; its reader says so
            self.send(("fenced", fence_id, failure))

    def lost(self, why: str) -> None:
        """This worker can answer nothing more: every call it had fails, as unknown."""
        with self.pool.lock:
            if self.gone is None:
                self.gone = (
                    f"{why} while calling; the target's state is unknown "
                    "(`ops resume` reads it again)"
                )
            calls, self.calls = self.calls, {}
        if calls:
            log.error("worker process lost", worker=self.index, why=why, calls=len(calls))
        for call in calls.values():
            call.failure = KillswitchError(self.gone)
            call.done.release()

    def stop(self, *, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            with contextlib.suppress(OSError):
                self.send(("stop",))
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._send_to.close()


class Pool:
    """Worker processes for one command, each owning the targets of its affinity groups."""

    def __init__(
        self,
        inventory: Inventory,
        count: int,
        *,
        threads: int,
        affinity: Callable[[Target], Hashable],
        patience: float,
        retry: RetryPolicy,
    ) -> None:
        self.lock = threading.Lock()
        self.affinity = affinity
        # How long a call may go unanswered without an op deadline (its retries and tries).
        self.patience = patience
        self.fences = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fence")
        self._ids = itertools.count()
        self._owner: dict[Hashable, _Worker] = {}
        self._load: dict[int, int] = {}
        hello = (
            "hello",
            inventory.path,
            inventory.spec,
            inventory.provider_configs,
            threads,
            _log_level(),
            retry,
        )
        self.workers = [_Worker(i, self) for i in range(count)]
        for worker in self.workers:
            worker.start(hello)
            self._load[worker.index] = 0
        log.info("worker processes started", workers=count)

    def place(self, targets: Sequence[Target]) -> None:
        """Give each affinity group of ``targets`` to a worker, largest groups first,
        each to the worker with the fewest targets so far."""
        groups: dict[Hashable, int] = {}
        for target in targets:
            key = self.affinity(target)
            groups[key] = groups.get(key, 0) + 1
        with self.lock:
            for key, size in sorted(groups.items(), key=lambda kv: (-kv[1], repr(kv[0]))):
                if key not in self._owner:
                    self._assign(key, size)

    def _assign(self, key: Hashable, size: int) -> _Worker:
        worker = min(self.workers, key=lambda w: (self._load[w.index], w.index))
        self._owner[key] = worker
        self._load[worker.index] += size
        return worker

    def _worker_for(self, target: Target) -> _Worker:
        key = self.affinity(target)
        with self.lock:
            return self._owner.get(key) or self._assign(key, 1)

    def observe(self, target: Target, deadline: float | None) -> Observed:
        found: Observed = self._call(target, None, ("observe", target, deadline), deadline)
        return found

    def apply(
        self,
        unit: Sequence[Change],
        ctx: ApplyContext,
        deadline: float | None,
    ) -> list[tuple[Target, Observed | Exception]]:
        """Apply ``unit`` in its worker, which then reads every target back at once, as
        the executor's read-back would next: the read-backs come with the outcome, one
        crossing of the pipes instead of one more per target."""
        fields = (ctx.op_id, ctx.actor, ctx.reason, ctx.ticket, ctx.at)
        changes = [(c.target, c.desired, c.observed, c.kind) for c in unit]
        message = ("apply", changes, fields, deadline)
        read: list[tuple[bool, Any]] = self._call(unit[0].target, ctx.fence, message, deadline)
        return [
            (change.target, found if ok else decode(found))
            for change, (ok, found) in zip(unit, read, strict=True)
        ]

    def _call(
        self,
        target: Target,
        fence: Callable[[], None] | None,
        message: tuple[Any, ...],
        deadline: float | None,
    ) -> Any:
        worker = self._worker_for(target)
        call_id = next(self._ids)
        call = _Call(worker, fence)
        call.done.acquire()
        worker.submit(call_id, call, (message[0], call_id, *message[1:]))
        wait = (deadline - time.monotonic() if deadline is not None else self.patience) + (
            GRACE_SECONDS
        )
        if not call.done.acquire(timeout=max(0.0, wait)):
            log.error("worker process stopped answering; stopping it", worker=worker.index)
            worker.lost(f"worker process {worker.index} did not answer by the op's deadline")
            worker.process.kill()
            call.done.acquire()  # lost() answered it
        if call.failure is not None:
            raise call.failure
        return call.outcome

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.fences.shutdown(wait=False, cancel_futures=True)


def _log_level() -> str:
    from killswitch import logs

    return logs.level or "warning"


# -- the worker's side ---------------------------------------------------------------


class _Fences:
    """The worker's fence: ask the parent, wait for its answer."""

    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        self.send = send
        self.lock = threading.Lock()
        self.waiting: dict[int, tuple[threading.Lock, list[Failure | None]]] = {}
        self._ids = itertools.count()

    def fence_for(self, call_id: int, deadline: float | None) -> Callable[[], None]:
        def fence() -> None:
            fence_id = next(self._ids)
            answered, answer = threading.Lock(), list[Failure | None]()
            answered.acquire()
            with self.lock:
                self.waiting[fence_id] = (answered, answer)
            self.send(("fence", fence_id, call_id))
            wait = (deadline - time.monotonic() if deadline is not None else 60.0) + GRACE_SECONDS
            if not answered.acquire(timeout=max(0.0, wait)):
                with self.lock:
                    self.waiting.pop(fence_id, None)
                raise LeaseLost("no answer from the lease holder before a write: refused")
            if answer[0] is not None:
                raise decode(answer[0])

        return fence

    def answered(self, fence_id: int, failure: Failure | None) -> None:
        with self.lock:
            found = self.waiting.pop(fence_id, None)
        if found is not None:
            found[1].append(failure)
            found[0].release()


def serve() -> None:
    """A worker process: read calls from stdin, answer on stdout, until told to stop or
    the parent is gone."""
    from killswitch import calls, logs
    from killswitch.domain import ChangeKind
    from killswitch.inventory import Inventory

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    replies = Connection(os.dup(1), readable=False)
    requests = Connection(os.dup(0), writable=False)
    os.dup2(2, 1)  # whatever else prints goes to stderr, never into the replies
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        with send_lock:
            replies.send_bytes(data)

    _, path, spec, configs, threads, level, policy = pickle.loads(requests.recv_bytes())
    logs.configure(level)
    inventory = Inventory(path=path, spec=spec, provider_configs=configs)
    for name in inventory.provider_names:  # built once, before the call threads race to
        inventory.provider(name)
    fences = _Fences(send)

    def run(call_id: int, work: Callable[[], Any]) -> None:
        try:
            outcome = (True, work())
        except BaseException as exc:
            outcome = (False, encode(exc))
        try:
            send(("done", call_id, *outcome))
        except OSError:
            os._exit(0)  # the parent is gone

    def observe(target: Target, deadline: float | None) -> Observed:
        mechanism = inventory.provider(target.provider).mechanism(target.mechanism)
        return calls.observe(mechanism, target, policy, deadline)

    def apply(
        call_id: int,
        changes: list[tuple[Target, Access, Access | None, ChangeKind]],
        fields: tuple[str, str, str, str | None, str],
        deadline: float | None,
    ) -> list[tuple[bool, Any]]:
        unit = [Change(t, desired, observed, kind) for t, desired, observed, kind in changes]
        first = unit[0].target
        mechanism = inventory.provider(first.provider).mechanism(first.mechanism)
        ctx = ApplyContext(*fields, fence=fences.fence_for(call_id, deadline))
        calls.apply(mechanism, unit, ctx, policy, deadline)
        read: list[tuple[bool, Any]] = []
        for change in unit:  # the read-back, in order, right after the write
            try:
                read.append((True, calls.observe(mechanism, change.target, policy, deadline)))
            except Exception as exc:
                read.append((False, encode(exc)))
        return read

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="call") as pool:
        while True:
            try:
                message = pickle.loads(requests.recv_bytes())
            except (EOFError, OSError):
                os._exit(0)  # the parent is gone: nothing of ours may go on
            kind = message[0]
            if kind == "observe":
                _, call_id, target, deadline = message
                pool.submit(run, call_id, functools.partial(observe, target, deadline))
            elif kind == "apply":
                _, call_id, changes, fields, deadline = message
                work = functools.partial(apply, call_id, changes, fields, deadline)
                pool.submit(run, call_id, work)
            elif kind == "fenced":
                fences.answered(message[1], message[2])
            elif kind == "stop":
                os._exit(0)


if __name__ == "__main__":
    serve()
