"""Who acts: an identity from a credential, never from a label the caller types.

In order: the principal an SSH signing key speaks for (``policy.restore.allowed_signers``
and ``--key`` / $KILLSWITCH_SIGNING_KEY); else the caller of the inventory's AWS
credentials (sts:GetCallerIdentity, through the first provider that can say); else the
operating-system account running the command (from its uid, not $USER). ``--actor`` /
$KILLSWITCH_ACTOR only add a display label.

Names are normalised (Unicode NFKC, case-folded, trimmed), and a name with invisible
characters or letters of more than one script is refused, so one person has one
name: ``Alice``, ``alice `` and ``ALICE`` are the same person; ``alice\\u200b`` and
``\\u0430lice`` (a Cyrillic a) are refused, not counted as someone else.

Revoke and restrict never wait on any of this: when a credential cannot be read they
fall back to the OS account, loudly. Restore, approve and decline refuse instead.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import structlog

from killswitch.contract import Identifies
from killswitch.errors import UsageError
from killswitch.signing import Signer, SigningError

if TYPE_CHECKING:
    from killswitch.inventory import Inventory

log = structlog.get_logger("killswitch.identity")

LABEL_ENV = "KILLSWITCH_ACTOR"
MAX_NAME = 128
# Scripts that one person's name may mix (Japanese writes kanji with kana).
FRIENDLY_SCRIPTS = frozenset({"CJK", "HIRAGANA", "KATAKANA"})

# How long asking AWS who the caller is may take: a revoke never waits long on it.
QUICK_TIMEOUT = 3.0

Source = Literal["ssh", "aws", "os"]


class IdentityError(UsageError):
    """No credential says who acts, or it names someone in a refused form."""


@dataclass(frozen=True)
class Identity:
    principal: str  # normalised: one person, one name
    source: Source
    label: str | None = None  # --actor: shown beside the principal, never compared
    signer: Signer | None = None  # the key that speaks for ``principal``, if any
    # Why a stronger credential could not be used (this is a fallback), if so.
    problem: str | None = None

    def vouched(self) -> Identity:
        """Raise unless this identity came from the credential it should have: restore,
        approve and decline do not act on a fallback."""
        if self.problem:
            raise IdentityError(f"{self.problem}; restore, approve and decline need it")
        return self

    def __str__(self) -> str:
        return f"{self.principal} ({self.label})" if self.label else self.principal


def normalise(name: str, what: str = "name") -> str:
    """The one spelling of a person's name; raise IdentityError for a refused form."""
    folded = unicodedata.normalize("NFKC", name).casefold().strip()
    if not folded:
        raise IdentityError(f"{what} is empty")
    if len(folded) > MAX_NAME:
        raise IdentityError(f"{what} is longer than {MAX_NAME} characters")
    for ch in folded:
        category = unicodedata.category(ch)
        if ch.isspace() or category[0] in "CZ":  # controls, format (zero-width), separators
            raise IdentityError(
                f"{what} {folded!r} contains an invisible or space character "
                f"(U+{ord(ch):04X}); one person has one plain name"
            )
    # Each part (user, domain label, session) in one script: "алиса@example.com" is a
    # name, "\u0430lice" (a Cyrillic a among Latin letters) only pretends to be one.
    for part in re.split(r"[@./_+=,-]", folded):
        scripts = {_script(ch) for ch in part if ch.isalpha()}
        if len(scripts - FRIENDLY_SCRIPTS) + bool(scripts & FRIENDLY_SCRIPTS) > 1:
            raise IdentityError(
                f"{what} {folded!r} mixes letters of several scripts in {part!r} "
                f"({', '.join(sorted(scripts))}); a name that looks like another's is refused"
            )
    return folded


def _script(ch: str) -> str:
    """The script of a letter, from its Unicode name (``CYRILLIC SMALL LETTER A``)."""
    name = unicodedata.name(ch, "UNKNOWN")
    word = name.split()[0]
    return "LATIN" if word in ("MODIFIER", "FULLWIDTH") else word


def principal_from_arn(arn: str) -> str:
    """``sts:GetCallerIdentity``'s ARN as ``<session or user>@<account>``: the person,
    whichever role they assumed."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or not parts[4]:
        raise IdentityError(f"AWS returned an unexpected caller ARN: {arn!r}")
    account, resource = parts[4], parts[5]
    kind, _, rest = resource.partition("/")
    if kind == "assumed-role":
        who = rest.split("/")[-1]  # role-name/session-name: the session is the person
    elif kind in ("user", "federated-user"):
        who = rest.split("/")[-1]  # any IAM path is not part of the name
    elif resource == "root":
        who = "root"
    else:
        raise IdentityError(f"AWS returned an unexpected caller ARN: {arn!r}")
    return normalise(f"{who}@{account}", "the AWS caller")


def os_principal() -> str:
    """The account running this process, from its uid (not $USER, which anyone sets)."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = f"uid{os.getuid()}"
    return normalise(f"{user}@{socket.gethostname()}", "the OS account")


def resolve(inventory: Inventory, *, key: str | None, label: str | None) -> Identity:
    """Who acts for this command. Never raises for a credential that cannot be read: it
    falls back to the OS account and says why in ``problem``, so nothing here can stall a
    kill. Restore, approve and decline call ``vouched()``, which refuses that fallback."""
    from killswitch.text import check_actor

    label = check_actor(label) if label else None
    signer, problem = None, None
    try:
        signer = Signer.from_option(key)
    except SigningError as exc:
        problem = str(exc)
    if signer is not None:
        if inventory.spec.policy.restore.allowed_signers is None:
            problem = (
                "a signing key was given but policy.restore.allowed_signers is not set, so "
                "nothing says whose key it is"
            )
        else:
            try:
                principal = normalise(signer.principal(allowed_signers(inventory)), "key owner")
                return Identity(principal, "ssh", label, signer)
            except (SigningError, IdentityError) as exc:
                problem = str(exc)
    for name in inventory.provider_names:
        provider = inventory.provider(name)
        if isinstance(provider, Identifies):
            try:
                caller = provider.caller_identity(QUICK_TIMEOUT)
                principal = principal_from_arn(caller) if caller.startswith("arn:") else caller
                return Identity(normalise(principal), "aws", label, None, problem)
            except Exception as exc:
                problem = f"could not read who you are from provider {name}'s credentials ({exc})"
                log.warning("caller identity unreadable; acting as the OS account", error=problem)
            break
    return Identity(os_principal(), "os", label, None, problem)


def allowed_signers(inventory: Inventory) -> Path:
    """The allowed_signers file, relative to the inventory."""
    raw = inventory.spec.policy.restore.allowed_signers
    if raw is None:
        raise IdentityError("policy.restore.allowed_signers is not set")
    path = Path(raw).expanduser()
    return path if path.is_absolute() else inventory.path.parent / path


def approvers(inventory: Inventory) -> frozenset[str]:
    """The normalised principals whose approval counts; empty: anyone."""
    return frozenset(
        normalise(p, "policy.restore.approvers entry")
        for p in inventory.spec.policy.restore.approvers
    )
