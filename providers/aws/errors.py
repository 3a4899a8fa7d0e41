"""AWS replies classified once, at the edge, into retryable or permanent errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.parsers import ResponseParserError

from killswitch import aws_errors
from killswitch.errors import PermanentError, ProviderError, RetryableError

RETRYABLE_CODES = aws_errors.RETRYABLE  # one table: killswitch/aws_errors.py

NETWORK_ERRORS = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)


def classify(exc: Exception, what: str) -> ProviderError:
    """The typed error for ``exc`` raised while doing ``what`` (e.g. 'ssm:PutParameter …')."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = f"{what}: {code}: {message}".rstrip(": ")
        if code in RETRYABLE_CODES or status >= 500 or status == 429:
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            return RetryableError(text, retry_after=_retry_after(headers.get("retry-after")))
        return PermanentError(text)
    if isinstance(exc, (*NETWORK_ERRORS, ResponseParserError)):
        # Connection trouble or a garbled reply: the request may or may not have landed,
        # and every lever re-reads before it writes, so another try is safe.
        return RetryableError(f"{what}: {exc}")
    if isinstance(exc, BotoCoreError):
        return PermanentError(f"{what}: {exc}")
    raise exc


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@contextmanager
def aws_call(what: str) -> Iterator[None]:
    """Turn botocore exceptions raised inside into RetryableError or PermanentError."""
    try:
        yield
    except (ClientError, BotoCoreError, ResponseParserError) as exc:
        raise classify(exc, what) from exc
