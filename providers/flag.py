"""The public flag document, now in the SDK (killswitch/sdk/flag.py); kept here so the
levers that import it from ``providers.flag`` need not change."""

from killswitch.sdk.flag import FLAG_SCHEMA, CorruptFlag, flag_document, parse_flag

__all__ = ["FLAG_SCHEMA", "CorruptFlag", "flag_document", "parse_flag"]
