"""What every provider shares: its levers, named in a plain map and built on first use.

A lever module is imported only when a target needs it, so validating an inventory
or printing help never loads boto3 or the kubernetes client. No registration by
import side effect: the map is the registry.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping

from killswitch.contract import Mechanism


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
                module, _, attr = self.table[name].partition(":")
                self._built[name] = getattr(importlib.import_module(module), attr)(self.provider)
            return self._built[name]
