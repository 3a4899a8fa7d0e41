"""The lever table and the whole-call bound, now in the SDK (killswitch/sdk/levers.py);
kept here so the providers that import them from ``providers.base`` need not change."""

from killswitch.sdk.levers import Levers, within

__all__ = ["Levers", "within"]
