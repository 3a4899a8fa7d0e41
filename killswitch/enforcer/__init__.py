"""The reference enforcer: what a serving gateway runs to obey killswitch's flags.

Importing it loads neither boto3 nor kubernetes; SsmSource imports boto3 on its first
read. See docs/enforcer.md for how to drop it in, and docs/flag-format.md for the
contract it implements."""

from killswitch.enforcer.asgi import (
    AUDIENCE_HEADER,
    ExtAuthzService,
    Gate,
    KillswitchMiddleware,
    Verdict,
    header_model,
    path_model,
)
from killswitch.enforcer.cache import Enforcer, Reading
from killswitch.enforcer.decision import Decision, UnreadableFlag, decide, parse_document
from killswitch.enforcer.sources import DirectorySource, Source, SourceUnavailable
from killswitch.enforcer.ssm import SsmSource

__all__ = [
    "AUDIENCE_HEADER",
    "Decision",
    "DirectorySource",
    "Enforcer",
    "ExtAuthzService",
    "Gate",
    "KillswitchMiddleware",
    "Reading",
    "Source",
    "SourceUnavailable",
    "SsmSource",
    "UnreadableFlag",
    "Verdict",
    "decide",
    "header_model",
    "parse_document",
    "path_model",
]
