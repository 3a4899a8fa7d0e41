"""The S3 anchor sink: one Object-Locked object per checkpoint (killswitch/anchor.py).

Each checkpoint is put with ``ObjectLockMode=COMPLIANCE`` and a retain-until date, so
nobody (root included) can delete or overwrite that object version before then. An
overwrite of the same key only adds a version, and a delete only adds a marker, so
reading lists every object version, never just the latest.

Besides killswitch/state/dynamodb.py, the one core module that imports boto3.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from killswitch.anchor import Checkpoint, Reading
from killswitch.errors import KillswitchError
from killswitch.text import printable, redact_urls

# Short and few: the engine anchors after every op, and a revoke must not wait on S3.
CLIENT_CONFIG = Config(
    connect_timeout=2, read_timeout=5, retries={"mode": "standard", "total_max_attempts": 2}
)

READ_WORKERS = 8  # checkpoint objects fetched at once by `audit verify --anchor`


class AnchorUnreachable(KillswitchError):
    """The anchor bucket refused or did not answer (exit 1): nothing was anchored or read."""


@dataclass(frozen=True)
class S3Sink:
    """``s3://BUCKET/PREFIX?region=…[&endpoint_url=…][&retain_days=…]``."""

    bucket: str
    prefix: str
    region: str
    endpoint_url: str | None = None
    retain_days: int = 365

    def __str__(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return redact_urls(f"{where}?region={self.region}")

    def _client(self) -> Any:
        return boto3.client(
            "s3", region_name=self.region, endpoint_url=self.endpoint_url, config=CLIENT_CONFIG
        )

    def _key(self, checkpoint: Checkpoint) -> str:
        name = f"{checkpoint.seq:012d}-{checkpoint.hash[:16]}.json"
        return f"{self.prefix}/{name}" if self.prefix else name

    def append(self, checkpoint: Checkpoint) -> str:
        key = self._key(checkpoint)
        until = datetime.now(UTC) + timedelta(days=self.retain_days)
        try:
            reply = self._client().put_object(
                Bucket=self.bucket,
                Key=key,
                Body=(checkpoint.to_json() + "\n").encode(),
                ContentType="application/json",
                ObjectLockMode="COMPLIANCE",
                ObjectLockRetainUntilDate=until,
                # Object Lock refuses a put without Content-MD5 or an x-amz-checksum.
                ChecksumAlgorithm="SHA256",
            )
        except (BotoCoreError, ClientError) as exc:
            raise AnchorUnreachable(
                f"anchor: could not write s3://{self.bucket}/{key}: {_why(exc)}"
            ) from None
        version = reply.get("VersionId")
        return f"s3://{self.bucket}/{key}" + (f" (version {version})" if version else "")

    def checkpoints(self) -> Reading:
        client = self._client()
        versions: list[tuple[str, str]] = []
        notes: list[str] = []
        listed = self.prefix + "/" if self.prefix else ""
        try:
            for page in client.get_paginator("list_object_versions").paginate(
                Bucket=self.bucket, Prefix=listed
            ):
                notes += [
                    f"s3://{self.bucket}/{printable(marker['Key'])} was deleted at "
                    f"{marker['LastModified']:%Y-%m-%dT%H:%M:%SZ} (a delete marker); "
                    "its versions are still read"
                    for marker in page.get("DeleteMarkers", [])
                ]
                versions += [(v["Key"], v["VersionId"]) for v in page.get("Versions", [])]

            def body(version: tuple[str, str]) -> bytes:
                key, version_id = version
                reply = client.get_object(Bucket=self.bucket, Key=key, VersionId=version_id)
                return bytes(reply["Body"].read())

            with ThreadPoolExecutor(max_workers=READ_WORKERS) as pool:
                bodies = list(pool.map(body, versions))
        except (BotoCoreError, ClientError) as exc:
            raise AnchorUnreachable(
                f"anchor: could not read s3://{self.bucket}: {_why(exc)}"
            ) from None
        found: list[Checkpoint] = []
        unreadable: list[str] = []
        for (key, version_id), raw in zip(versions, bodies, strict=True):
            try:
                found.append(Checkpoint.from_json(raw.decode("utf-8")))
            except (ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
                where = f"s3://{self.bucket}/{printable(key)} version {printable(version_id)}"
                unreadable.append(f"{where}: not a checkpoint ({exc})")
        return Reading(tuple(found), tuple(unreadable), tuple(notes))


def _why(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        text = f"{error.get('Code', '?')}: {error.get('Message', '')}"
        if "ObjectLockConfiguration" in text:
            text += " (create the bucket with Object Lock enabled)"
        return printable(text)
    return printable(exc)
