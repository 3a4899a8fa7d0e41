"""Where a gateway reads a model's flag: a ConfigMap mounted as a directory (or a local
directory of files, one per model), or SSM (killswitch/enforcer/ssm.py, which alone touches boto3).

A source answers ``read(model)`` with the model's posture, raises ``SourceUnavailable``
when it could not read (the cache keeps the last good posture for a grace period), or
``UnreadableFlag`` when it read a document nobody may trust (the cache fails closed
at once: docs/flag-format.md, "Fail closed when the document is unreadable")."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from killswitch.domain import OPEN, Access, is_valid_name
from killswitch.enforcer.decision import MAX_DOCUMENT_BYTES, UnreadableFlag, parse_document


class SourceUnavailable(Exception):
    """The read itself failed (no mount, access denied, throttled, timed out)."""


class Source(Protocol):
    def read(self, model: str) -> Access: ...

    def describe(self) -> str:
        """Where it reads, for logs and reasons (never a secret)."""
        ...


def checked_model(model: str) -> str:
    """Model names become file names and parameter paths: only inventory-valid names."""
    if not is_valid_name(model):
        raise UnreadableFlag(f"{model[:64]!r} is not a model name")
    return model


class DirectorySource:
    """One file per model in a directory: a ConfigMap mounted as a volume, as kubelet
    lays it out (each key a symlink through ``..data``, swapped atomically on update),
    or files an operator keeps by hand. A missing key file reads as ``open``, as a
    missing key does; a missing or unreadable directory is a failed read (a volume that
    is not mounted must not read as open)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def describe(self) -> str:
        return f"directory {self.directory}"

    def read(self, model: str) -> Access:
        path = self.directory / checked_model(model)
        try:
            # Opening the key resolves ..data once, so one read sees one version.
            with open(path, "rb") as f:
                raw = f.read(MAX_DOCUMENT_BYTES + 1)
        except FileNotFoundError:
            if self.directory.is_dir():
                return OPEN
            raise SourceUnavailable(f"{self.describe()} is not there") from None
        except OSError as exc:
            raise SourceUnavailable(f"{path}: {exc.strerror or exc}") from None
        return parse_document(model, raw)
