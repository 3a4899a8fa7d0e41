"""State stores, chosen by the inventory's ``state:`` URL.

Nothing here imports boto3: the DynamoDB store is imported only when a
``dynamodb://`` URL is opened, so ``killswitch --help`` stays fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from killswitch.clock import SYSTEM, Clock
from killswitch.errors import UsageError
from killswitch.state.base import Lease, StateStore, StoreUnreachable
from killswitch.text import printable, redact_urls

__all__ = [
    "DynamoDbUrl",
    "Lease",
    "StateStore",
    "StoreUnreachable",
    "break_glass_warning",
    "open_store",
    "parse_dynamodb_url",
    "parse_state_url",
    "state_permissions",
]

SUPPORTED = (
    "supported: sqlite:///path/to/state.db (relative to this file) or "
    "dynamodb://TABLE?region=REGION[&endpoint_url=URL]"
)
TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")
REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d{1,2}$")


@dataclass(frozen=True)
class DynamoDbUrl:
    """``dynamodb://TABLE?region=…[&endpoint_url=…][&connect_timeout=SECONDS]``."""

    table: str
    region: str
    endpoint_url: str | None = None
    # How long to wait for the store before revoke and restrict fall back to the spool.
    connect_timeout: float = 2.0

    def __str__(self) -> str:
        url = f"dynamodb://{self.table}?region={self.region}"
        if self.endpoint_url:
            url += f"&endpoint_url={quote(self.endpoint_url, safe=':/')}"
        if self.connect_timeout != 2.0:
            url += f"&connect_timeout={self.connect_timeout:g}"
        return url


@dataclass(frozen=True)
class SqliteUrl:
    """``sqlite:///PATH``, its path already resolved."""

    path: Path

    def __str__(self) -> str:
        return SQLITE_PREFIX + str(self.path)


StateUrl = SqliteUrl | DynamoDbUrl


def parse_state_url(url: str, base: Path) -> StateUrl:
    """The state URL, parsed once; a relative sqlite path is relative to ``base`` (the
    inventory's folder). ValueError with one sentence on what is wrong."""
    if url.startswith(SQLITE_PREFIX):
        path = Path(check_sqlite_url(url))
        return SqliteUrl((path if path.is_absolute() else base / path).resolve())
    if url.startswith("dynamodb://"):
        return parse_dynamodb_url(url)
    scheme = url.split(":", 1)[0]
    raise ValueError(f"unsupported state URL scheme {scheme!r}; {SUPPORTED}")


SQLITE_PREFIX = "sqlite:///"
SPECIAL_ROOTS = (Path("/dev"), Path("/proc"), Path("/sys"))


def check_sqlite_url(url: str) -> str:
    """The path part of ``sqlite:///PATH``; ValueError with one sentence on what is wrong.

    The path is taken literally: no query, fragment or percent-escapes (they would name
    odd files, not set options), no ``..`` segments, no control characters."""
    path = url[len(SQLITE_PREFIX) :]
    if not url.startswith(SQLITE_PREFIX) or not path or path.endswith("/"):
        raise ValueError(f"{url!r} names no file; {SUPPORTED}")
    for mark, what in (("?", "a ?query"), ("#", "a #fragment"), ("%", "a %-escape")):
        if mark in path:
            raise ValueError(
                f"sqlite state URL: {what} is not understood here; write the file's path as "
                "it is (sqlite:///relative/state.db or sqlite:////absolute/state.db)"
            )
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise ValueError("sqlite state URL: the path holds control characters")
    if ".." in Path(path).parts:
        raise ValueError("sqlite state URL: no '..' in the path; give an absolute path instead")
    return path


def sqlite_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot hold the state (a device, a special or system file), or None."""
    resolved = path.resolve()
    for root in SPECIAL_ROOTS:
        if resolved.is_relative_to(root):
            return f"{resolved} is under {root}: a device or system file, not a place for state"
    if resolved.exists() and not resolved.is_file():
        return f"{resolved} exists and is not a regular file"
    if resolved.parent.exists() and not resolved.parent.is_dir():
        return f"{resolved.parent} is not a folder"
    return None


def url_params(query: str, known: tuple[str, ...], what: str) -> dict[str, str]:
    """A URL's query as name → value: only ``known`` names, each at most once; ValueError
    naming ``what`` and the parameter otherwise (state and anchor URLs alike)."""
    found = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(found) - set(known))
    if unknown:
        shown = printable(redact_urls(unknown[0]))
        raise ValueError(f"{what}: unknown parameter {shown!r} (known: {', '.join(known)})")
    if any(len(values) > 1 for values in found.values()):
        raise ValueError(f"{what}: give each parameter once")
    return {name: values[0] for name, values in found.items()}


def parse_dynamodb_url(url: str) -> DynamoDbUrl:
    """Check a ``dynamodb://`` URL; raise ValueError with one sentence on what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "dynamodb" or parts.path not in ("", "/") or parts.fragment:
        raise ValueError(f"{url!r} is not dynamodb://TABLE?region=REGION; {SUPPORTED}")
    if not TABLE_NAME.fullmatch(parts.netloc):
        raise ValueError(
            f"dynamodb table name {parts.netloc!r}: 3-255 characters of A-Z a-z 0-9 _ . -"
        )
    query = url_params(parts.query, ("region", "endpoint_url", "connect_timeout"), "dynamodb URL")
    region = query.get("region", "")
    if not REGION.fullmatch(region):
        raise ValueError(
            f"dynamodb URL needs region=REGION (e.g. us-east-1), got {region or 'none'!r}"
        )
    endpoint = query.get("endpoint_url")
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ValueError(f"dynamodb URL: endpoint_url {endpoint!r} must be http:// or https://")
    timeout = 2.0
    if "connect_timeout" in query:
        try:
            timeout = float(query["connect_timeout"])
        except ValueError:
            timeout = -1.0
        if not 0.1 <= timeout <= 30:
            raise ValueError("dynamodb URL: connect_timeout is 0.1 to 30 seconds")
    return DynamoDbUrl(parts.netloc, region, endpoint or None, timeout)


def open_store(
    url: str | StateUrl, *, spool_dir: Path | None = None, clock: Clock = SYSTEM
) -> StateStore:
    """The store behind ``url`` (``sqlite:///path`` or ``dynamodb://table?region=…``).

    A shared store that does not answer within its connect timeout raises
    StoreUnreachable; with ``spool_dir`` (revoke and restrict only) it yields a
    break-glass SpoolStore instead, so an outage of the state never blocks a revoke."""
    if isinstance(url, str):
        try:
            url = parse_state_url(url, Path.cwd())
        except ValueError as exc:
            raise UsageError(f"state: {exc}") from None
    if isinstance(url, SqliteUrl):
        from killswitch.state.sqlite import SqliteStore

        problem = sqlite_file_problem(url.path)
        if problem is not None:
            raise UsageError(f"state: {problem}")
        return SqliteStore(url.path, clock=clock)
    from killswitch.state.dynamodb import DynamoDbStore

    try:
        return DynamoDbStore.connect(url, clock=clock)
    except StoreUnreachable as exc:
        if spool_dir is None:
            raise
        from killswitch.state.spool import SpoolStore

        return SpoolStore.open(spool_dir, str(url), reason=str(exc))


def break_glass_warning(store: StateStore) -> str | None:
    """The loud warning to print when ``store`` is the break-glass spool, else None."""
    from killswitch.state.spool import SpoolStore

    return store.warning if isinstance(store, SpoolStore) else None


# What the shared store calls (killswitch/state/dynamodb.py); TransactWriteItems is
# authorised as the item actions inside it, ConditionCheckItem among them.
DYNAMODB_ACTIONS = (
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:Scan",  # state dump and migrate
    "dynamodb:UpdateItem",
)


def state_permissions(url: str) -> list[dict[str, object]]:
    """IAM statements the state store behind ``url`` needs (none for SQLite)."""
    if not url.startswith("dynamodb://"):
        return []
    parsed = parse_dynamodb_url(url)
    table = f"arn:aws:dynamodb:{parsed.region}:*:table/{parsed.table}"
    return [
        {
            "Sid": "KillswitchStateTable",
            "Effect": "Allow",
            "Action": list(DYNAMODB_ACTIONS),
            "Resource": [table, f"{table}/index/*"],
        }
    ]
