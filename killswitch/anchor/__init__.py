"""Checkpoints of the audit chain's head, kept where the state's writers cannot rewrite them.

The hash chain alone cannot catch someone who can write the state: delete the tail and
copy the last remaining (seq, hash) into the head record, or rewrite an event and
re-hash everything after it, and ``audit verify`` passes. A checkpoint written to an
append-only sink (an S3 bucket with Object Lock, or a local append-only file) pins
what the chain was at that moment; ``verify_against`` proves the log still extends
every checkpoint ever written.

A checkpoint only ever adds a constraint: a forged one can raise a false alarm but
never hide tampering, so what the sink must prevent is removal (Object Lock), and the
optional SSH signature says who anchored and unmasks forgeries.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import structlog

from killswitch import signing
from killswitch.audit import GENESIS, event_hash
from killswitch.domain import AuditEvent, utcnow
from killswitch.errors import UsageError
from killswitch.render import audit_json
from killswitch.signing import Signer
from killswitch.state import REGION, url_params
from killswitch.state.base import StateStore
from killswitch.text import printable, redact_urls

log = structlog.get_logger("killswitch.anchor")

SUPPORTED = (
    "supported: file:///absolute/path, file:relative/path (JSON Lines, appended) or "
    "s3://BUCKET[/PREFIX]?region=REGION[&endpoint_url=URL][&retain_days=DAYS] "
    "(a bucket with Object Lock)"
)
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/-]{0,512}$")
HASH = re.compile(r"^[0-9a-f]{64}$")
SPECIAL_ROOTS = (Path("/dev"), Path("/proc"), Path("/sys"))
DEFAULT_RETAIN_DAYS = 365
HOOK_DEADLINE = 5.0  # seconds the engine's hook may add to an op's exit, at most


@dataclass(frozen=True)
class Checkpoint:
    """The chain's head at one moment: event ``seq`` has ``hash``. Seqs start at 1 with no
    gaps (``audit.verify`` checks that), so ``seq`` is also the chain's length."""

    seq: int
    hash: str
    at: str  # when the checkpoint was taken
    store: str  # the state URL, credentials masked
    signer: str | None = None  # the principal of allowed_signers whose key signed
    signature: str | None = None  # armored SSH signature over ``signed_bytes()``

    def signed_bytes(self) -> bytes:
        """What the signature covers: every field but the signature, as canonical JSON."""
        body = {k: v for k, v in asdict(self).items() if k != "signature"}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def to_json(self) -> str:
        """One line of canonical JSON."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        """Parse one stored checkpoint; ValueError saying what is wrong."""
        data = json.loads(text)
        if not isinstance(data, dict) or set(data) != set(cls.__dataclass_fields__):
            raise ValueError("not a checkpoint (fields differ)")
        seq, digest = data["seq"], data["hash"]
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError("seq is not a count")
        if not isinstance(digest, str) or not HASH.fullmatch(digest):
            raise ValueError("hash is not a SHA-256 hex digest")
        for name in ("at", "store"):
            if not isinstance(data[name], str):
                raise ValueError(f"{name} is not text")
        for name in ("signer", "signature"):
            if data[name] is not None and not isinstance(data[name], str):
                raise ValueError(f"{name} is not text")
        return cls(**data)

    @property
    def label(self) -> str:
        if self.signature is None:
            who = "unsigned"
        else:
            who = f"signed by {self.signer}" if self.signer else "signed"
        return f"checkpoint of event {self.seq} taken {self.at} ({who})"


@dataclass(frozen=True)
class Reading:
    """What a sink holds: every checkpoint it could parse, and what it could not."""

    checkpoints: tuple[Checkpoint, ...]
    unreadable: tuple[str, ...] = ()  # one sentence per entry that is not a checkpoint
    notes: tuple[str, ...] = ()  # worth saying, not a failure (e.g. an S3 delete marker)


class Sink(Protocol):
    """An append-only place for checkpoints."""

    def append(self, checkpoint: Checkpoint) -> str:
        """Write ``checkpoint`` after every earlier one; return where it went."""
        ...

    def checkpoints(self) -> Reading:
        """Every checkpoint ever appended (for S3: every object version, not the latest)."""
        ...


@dataclass(frozen=True)
class FileSink:
    """JSON Lines in a local file, opened O_APPEND and fsync'd; earlier lines are never
    rewritten. Make it append-only for everyone else with ``chattr +a``."""

    path: Path

    def __str__(self) -> str:
        return f"file://{self.path}"

    def append(self, checkpoint: Checkpoint) -> str:
        line = (checkpoint.to_json() + "\n").encode()
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write: O_APPEND lands it whole after the last line
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # the new file's name must survive a crash too
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return str(self.path)

    def checkpoints(self) -> Reading:
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return Reading(())
        except OSError as exc:
            raise UsageError(f"anchor: cannot read {self.path}: {exc.strerror}") from None
        found: list[Checkpoint] = []
        unreadable: list[str] = []
        lines = text.split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                found.append(Checkpoint.from_json(line))
            except (ValueError, TypeError) as exc:
                unreadable.append(f"{self.path}:{number}: not a checkpoint ({exc})")
        return Reading(tuple(found), tuple(unreadable))


def check_anchor_url(url: str) -> None:
    """Raise UsageError unless ``url`` is an anchor URL (for ``inventory validate``; no
    sink is built, no SDK imported)."""
    if url.startswith("s3:"):
        _s3_params(url)
    else:
        parse_anchor_url(url)


def parse_anchor_url(url: str, *, base: Path | None = None) -> Sink:
    """The sink behind ``url``; UsageError (exit 64) naming the bad part. A relative
    ``file:`` path is relative to ``base`` (the inventory's folder), else the cwd."""
    shown = printable(url)
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise UsageError("anchor URL: holds control characters")
    scheme = url.split(":", 1)[0] if ":" in url else ""
    if scheme == "file":
        return FileSink(_file_path(url, base))
    if scheme == "s3":
        return _s3_sink(url)
    raise UsageError(f"anchor URL {shown!r}: unsupported scheme {scheme or 'none'!r}; {SUPPORTED}")


def _file_path(url: str, base: Path | None) -> Path:
    parts = urlsplit(url)
    if parts.netloc:
        raise UsageError(
            f"anchor file URL: {parts.netloc!r} is read as a host; write file:///absolute/path "
            "(three slashes) or file:relative/path"
        )
    raw = url[len("file:") :]
    if raw.startswith("//"):
        raw = raw[2:]
    for mark, what in (("?", "a ?query"), ("#", "a #fragment"), ("%", "a %-escape")):
        if mark in raw:
            raise UsageError(f"anchor file URL: {what} is not understood; write the path as it is")
    if not raw or raw.endswith("/"):
        raise UsageError(f"anchor file URL {printable(url)!r} names no file; {SUPPORTED}")
    path = Path(raw)
    if ".." in path.parts:
        raise UsageError("anchor file URL: no '..' in the path; give an absolute path instead")
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    resolved = path.resolve()
    for root in SPECIAL_ROOTS:
        if resolved.is_relative_to(root):
            raise UsageError(f"anchor file URL: {resolved} is under {root}, not a place for a log")
    if resolved.exists() and not resolved.is_file():
        raise UsageError(f"anchor file URL: {resolved} exists and is not a regular file")
    return resolved


def _s3_sink(url: str) -> Sink:
    from killswitch.anchor.s3 import S3Sink  # boto3 only when an s3 anchor is used

    return S3Sink(*_s3_params(url))


def _s3_params(url: str) -> tuple[str, str, str, str | None, int]:
    """bucket, prefix, region, endpoint_url, retain_days of an s3:// anchor URL."""
    parts = urlsplit(url)
    if parts.fragment:
        raise UsageError("anchor s3 URL: a #fragment is not understood")
    if not BUCKET.fullmatch(parts.netloc) or ".." in parts.netloc:
        raise UsageError(
            f"anchor s3 URL: bucket name {printable(redact_urls(parts.netloc))!r}: 3-63 "
            "characters of a-z 0-9 . -, starting and ending with a letter or digit"
        )
    prefix = parts.path.strip("/")
    if not PREFIX.fullmatch(prefix) or ".." in prefix.split("/") or "//" in prefix:
        raise UsageError(
            f"anchor s3 URL: prefix {printable(prefix)!r}: up to 512 characters of "
            "A-Z a-z 0-9 ! _ . * ' ( ) - /, no empty or '..' segments"
        )
    try:
        query = url_params(parts.query, ("region", "endpoint_url", "retain_days"), "anchor s3 URL")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    region = query.get("region", "")
    if not REGION.fullmatch(region):
        raise UsageError(
            "anchor s3 URL needs region=REGION (e.g. us-east-1), "
            f"got {printable(region) or 'none'!r}"
        )
    endpoint = query.get("endpoint_url")
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise UsageError(
            f"anchor s3 URL: endpoint_url {printable(redact_urls(endpoint))!r} must be "
            "http:// or https://"
        )
    days = query.get("retain_days", str(DEFAULT_RETAIN_DAYS))
    if not days.isdigit() or not 1 <= int(days) <= 36500:
        raise UsageError("anchor s3 URL: retain_days is a whole number of days, 1 to 36500")
    return parts.netloc, prefix, region, endpoint or None, int(days)


def checkpoint_of(
    head: tuple[int, str],
    store_url: str,
    signer: Signer | None = None,
    allowed_signers: Path | None = None,
) -> Checkpoint:
    """A checkpoint of ``head``, signed when ``signer`` is given (its principal named when
    ``allowed_signers`` is)."""
    seq, digest = head
    checkpoint = Checkpoint(seq, digest, utcnow(), redact_urls(store_url))
    if signer is None:
        return checkpoint
    if allowed_signers is not None:
        checkpoint = replace(checkpoint, signer=signer.principal(allowed_signers))
    return replace(checkpoint, signature=signer.sign(checkpoint.signed_bytes(), signing.CHECKPOINT))


def anchor(
    store: StateStore,
    sink: Sink,
    *,
    store_url: str,
    signer: Signer | None = None,
    allowed_signers: Path | None = None,
) -> tuple[Checkpoint, str]:
    """Append a checkpoint of ``store``'s chain head to ``sink``; return it and where it
    went. Only the head is read (one read), so anchoring after every op stays cheap;
    a head that was already tampered with cannot hide, since every earlier checkpoint
    stays in the sink and ``verify_against`` checks them all."""
    checkpoint = checkpoint_of(store.audit_head(), store_url, signer, allowed_signers)
    return checkpoint, sink.append(checkpoint)


def anchor_after_op(
    store: StateStore,
    anchor_url: str | None,
    signer: Signer | None = None,
    *,
    store_url: str,
    base: Path | None = None,
    allowed_signers: Path | None = None,
    deadline: float = HOOK_DEADLINE,
) -> None:
    """The engine's hook after every op: anchor the chain head to ``anchor_url`` (the
    inventory's ``policy.audit.anchor``, ``base`` its folder; None: do nothing).

    Best effort: it never raises, it logs a warning. It waits at most ``deadline``
    seconds (the S3 calls are bounded too: 2 s to connect, 5 s to read, 2 attempts), so
    a slow or dead anchor never holds a revoke's exit; a put still in flight then may
    land or not, and the next op's checkpoint covers this one's events either way."""
    if anchor_url is None:
        return
    outcome: list[str] = []

    def run() -> None:
        try:
            sink = parse_anchor_url(anchor_url, base=base)
            checkpoint, where = anchor(
                store, sink, store_url=store_url, signer=signer, allowed_signers=allowed_signers
            )
            outcome.append(f"anchored event {checkpoint.seq} to {where}")
        except Exception as exc:
            outcome.append("")
            log.warning(
                "audit anchor failed; the op itself is done: run `killswitch audit anchor`",
                anchor=printable(redact_urls(anchor_url)),
                error=printable(exc),
            )

    worker = threading.Thread(target=run, name="killswitch-anchor", daemon=True)
    worker.start()
    worker.join(deadline)
    if worker.is_alive():
        log.warning(
            f"audit anchor did not answer within {deadline:g}s; the op itself is done: "
            "run `killswitch audit anchor`",
            anchor=printable(redact_urls(anchor_url)),
        )
    elif outcome and outcome[0]:
        log.debug("audit anchored", detail=printable(outcome[0]))


@dataclass(frozen=True)
class AnchorCheck:
    """What ``verify_against`` found: problems fail ``audit verify``; notes do not."""

    problems: tuple[str, ...]
    notes: tuple[str, ...]
    checkpoints: int
    latest: Checkpoint | None


def verify_against(
    events: Sequence[AuditEvent], sink: Sink, allowed_signers: Path | None = None
) -> AnchorCheck:
    """Whether the log extends every checkpoint in ``sink``.

    The chain is recomputed from genesis (stored hashes are not trusted), so a checkpoint
    beyond the log's end means truncation, and one whose event now hashes differently
    means a rewrite (re-hashed or not)."""
    reading = sink.checkpoints()
    problems = list(reading.unreadable)
    notes = list(reading.notes)
    recomputed = _recompute(events)
    last = events[-1].seq if events else 0
    unchecked_signatures = 0
    for checkpoint in sorted(reading.checkpoints, key=lambda c: (c.seq, c.at)):
        if checkpoint.signature is not None:
            if allowed_signers is None:
                unchecked_signatures += 1
            elif not _signature_holds(checkpoint, allowed_signers):
                problems.append(
                    f"{checkpoint.label}: its signature does not verify against "
                    f"{allowed_signers} (forged, or signed by an unlisted key)"
                )
                continue
        problems += _against_log(checkpoint, recomputed, last)
    if not reading.checkpoints and not reading.unreadable:
        notes.append(
            "no checkpoint in the anchor: nothing to compare the log with (if checkpoints "
            "were written there, the anchor itself was removed)"
        )
    if unchecked_signatures:
        notes.append(
            f"{unchecked_signatures} signed checkpoint(s) not checked: set "
            "policy.restore.allowed_signers to check them"
        )
    latest = max(reading.checkpoints, key=lambda c: (c.seq, c.at), default=None)
    return AnchorCheck(tuple(problems), tuple(notes), len(reading.checkpoints), latest)


def _recompute(events: Sequence[AuditEvent]) -> dict[int, str]:
    """seq → the hash the chain really has there, recomputed from genesis."""
    chain: dict[int, str] = {0: GENESIS}
    prev = GENESIS
    for e in events:
        prev = event_hash(prev, e.seq, e.at, e.actor, e.kind, e.op_id, e.payload)
        chain.setdefault(e.seq, prev)
    return chain


def _against_log(checkpoint: Checkpoint, recomputed: dict[int, str], last: int) -> list[str]:
    if checkpoint.seq > last:
        return [
            f"{checkpoint.label} is beyond the log's end at event {last}: events "
            f"{last + 1}..{checkpoint.seq} were deleted (truncated log)"
        ]
    if recomputed.get(checkpoint.seq) != checkpoint.hash:
        return [
            f"{checkpoint.label}: the log no longer hashes to it at event {checkpoint.seq} "
            f"(events up to {checkpoint.seq} were rewritten or re-hashed)"
        ]
    return []


def _signature_holds(checkpoint: Checkpoint, allowed_signers: Path) -> bool:
    assert checkpoint.signature is not None
    found = signing.signers_of(
        checkpoint.signed_bytes(), checkpoint.signature, signing.CHECKPOINT, allowed_signers
    )
    return bool(found) and (checkpoint.signer is None or checkpoint.signer in found)


def export_line(event: AuditEvent) -> str:
    """One audit event as one line of ASCII JSON (control characters and non-ASCII
    escaped, so a terminal or a SIEM parser sees text, never escapes it obeys), with
    the field names of ``audit list -o json`` plus ``prev_hash``."""
    record = {**audit_json(event), "prev_hash": event.prev_hash}
    return json.dumps(record, separators=(",", ":"))


def anchor_permissions(url: str | None) -> list[dict[str, object]]:
    """IAM statements an S3 anchor needs (``aws policy``): write a locked checkpoint, read
    every version back. None for a file anchor or none at all."""
    if url is None or not url.startswith("s3:"):
        return []
    bucket, prefix, _region, _endpoint, _days = _s3_params(url)
    objects = f"arn:aws:s3:::{bucket}/{prefix + '/' if prefix else ''}*"
    return [
        {
            "Sid": "KillswitchAuditAnchorWrite",
            "Effect": "Allow",
            # A put with a retention date is authorised as PutObjectRetention too.
            "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject",
                       "s3:PutObjectRetention"],
            "Resource": objects,
        },
        {
            "Sid": "KillswitchAuditAnchorList",
            "Effect": "Allow",
            "Action": ["s3:ListBucketVersions"],
            "Resource": f"arn:aws:s3:::{bucket}",
        },
    ]  # fmt: skip
