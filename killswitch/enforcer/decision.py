"""The gateway's side of docs/flag-format.md, as pure functions: read a flag document
strictly, and decide allow or deny for one model and one caller's audiences.

killswitch's own reader (providers/flag.py) is deliberately looser (it only needs the
posture to plan); a gateway must refuse what it cannot fully trust, so this one checks
every rule of "How a gateway should enforce it"."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from killswitch.domain import Access, Posture

FLAG_SCHEMA = "killswitch.flag/v1"
# A flag document stays under 4,096 bytes for any input killswitch accepts; anything far
# larger is not ours, and is not worth parsing on a serving host.
MAX_DOCUMENT_BYTES = 64 * 1024


class UnreadableFlag(ValueError):
    """The flag exists but is not a document a gateway may trust: fail closed."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str


def parse_document(model: str, raw: bytes | str) -> Access:
    """The posture in one flag document, or UnreadableFlag naming the broken rule."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise UnreadableFlag(f"document is {len(raw)} bytes (more than {MAX_DOCUMENT_BYTES})")
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnreadableFlag(f"not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(document, dict):
        raise UnreadableFlag(f"JSON {type(document).__name__}, not an object")
    if document.get("schema") != FLAG_SCHEMA:
        raise UnreadableFlag(f"schema is {_shown(document.get('schema'))}, not {FLAG_SCHEMA}")
    if document.get("model") != model:
        raise UnreadableFlag(f"model is {_shown(document.get('model'))}, not {model!r}")
    posture = document.get("posture")
    if posture not in {p.value for p in Posture}:
        raise UnreadableFlag(f"posture is {_shown(posture)}")
    audience = document.get("audience", [])
    if not isinstance(audience, list) or not all(isinstance(a, str) for a in audience):
        raise UnreadableFlag("audience is not an array of strings")
    return Access(Posture(posture), tuple(audience))


def decide(access: Access | None, audiences: Iterable[str], unknown: str = "") -> Decision:
    """Allow or deny one request. ``access`` None means the posture is not known (the
    flag is unreadable, or could not be read within the grace period): deny."""
    if access is None:
        return Decision(False, f"posture unknown, failing closed: {unknown or 'no reading'}")
    if access.posture is Posture.OPEN:
        return Decision(True, "open")
    if access.posture is Posture.REVOKED:
        return Decision(False, "revoked")
    if not access.audience:
        return Decision(False, "restricted to nobody (reads as revoked)")
    shared = sorted(set(access.audience) & set(audiences))
    if shared:
        return Decision(True, f"restricted; caller is {shared[0]}")
    return Decision(False, f"restricted to {','.join(access.audience)}; caller is not")


def _shown(value: object) -> str:
    """A value from an untrusted document, short and on one line, for a log or a reason."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 40 else text[:39] + "…"
