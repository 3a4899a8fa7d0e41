"""Text from people and providers, bounded on the way in and made harmless on the way out.

On the way in, each free-text flag has a limit in characters and in UTF-8 bytes and
refuses control characters, so it fits every place it is written (a flag document,
an annotation, a partner's body, a role session name). On the way out, anything
printed to a terminal or a log has its control characters shown, not obeyed, and
credentials inside URLs are masked.
"""

from __future__ import annotations

import re
import unicodedata

from killswitch.errors import UsageError

MAX_REASON_CHARS, MAX_REASON_BYTES = 1000, 4000
MAX_TICKET_CHARS = 128
MAX_ACTOR_CHARS = 128
FLAG_REASON_CHARS = 200  # the flag carries an excerpt; the audit log has the whole reason

# C0 and C1 controls, DEL, and the bidi and zero-width marks that can reorder or hide text.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_ALLOWED_IN_REASON = {"\n", "\t"}
_CREDENTIALS = re.compile(r"(://[^/\s:@?#]*:)([^@\s/]+)(@|%40)")


def check(flag: str, value: str, *, max_chars: int, max_bytes: int, multiline: bool) -> str:
    """``value`` if it fits ``flag``'s limits; UsageError naming the flag and the limit."""
    if not value.strip():
        raise UsageError(f"{flag} must say something")
    if len(value) > max_chars or len(value.encode("utf-8")) > max_bytes:
        raise UsageError(
            f"{flag}: at most {max_chars} characters and {max_bytes} bytes of UTF-8 "
            f"(got {len(value)} characters, {len(value.encode('utf-8'))} bytes)"
        )
    allowed = _ALLOWED_IN_REASON if multiline else set()
    bad = next((c for c in value if _UNSAFE.match(c) and c not in allowed), None)
    if bad is not None:
        raise UsageError(
            f"{flag}: holds the control character {unicodedata.name(bad, hex(ord(bad)))}"
        )
    return value


def check_reason(value: str) -> str:
    return check(
        "--reason", value, max_chars=MAX_REASON_CHARS, max_bytes=MAX_REASON_BYTES, multiline=True
    )


def check_ticket(value: str | None) -> str | None:
    if value is None:
        return None
    return check(
        "--ticket", value, max_chars=MAX_TICKET_CHARS, max_bytes=4 * MAX_TICKET_CHARS,
        multiline=False,
    )  # fmt: skip


def check_actor(value: str) -> str:
    return check(
        "--actor", value, max_chars=MAX_ACTOR_CHARS, max_bytes=4 * MAX_ACTOR_CHARS,
        multiline=False,
    )  # fmt: skip


def excerpt(value: str, max_chars: int) -> str:
    """``value`` cut to ``max_chars`` characters, marked when cut."""
    return value if len(value) <= max_chars else value[: max_chars - 1] + "…"


def printable(value: object) -> str:
    """``value`` as text safe for a terminal or a log line: control characters are shown
    as escapes (``\\x1b``), never obeyed; credentials in URLs are masked."""
    text = redact_urls(str(value))
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def redact_urls(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` in it masked,
    nested or %-encoded URLs (an endpoint inside a state URL) included."""
    return _CREDENTIALS.sub(r"\1***\3", text)
