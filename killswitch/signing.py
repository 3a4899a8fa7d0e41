"""Signatures over what a person agreed to: OpenSSH's ``ssh-keygen -Y sign/verify``.

The same format and tool git uses for signed commits, so no crypto is written here:
a key is a file (or a ``.pub`` whose private half is in ssh-agent), and who a key
speaks for comes from an OpenSSH ``allowed_signers`` file (``principals keytype
base64-key``). Each use has its own namespace, so a signature made for one (an
approval) can never be replayed as another (an audit checkpoint).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from killswitch.errors import UsageError

APPROVAL = "killswitch-approval@killswitch.dev"  # restore requests, approvals, declines
CHECKPOINT = "killswitch-checkpoint@killswitch.dev"  # audit anchors
KEY_ENV = "KILLSWITCH_SIGNING_KEY"
TIMEOUT = 10.0  # seconds; ssh-keygen signs in milliseconds, an agent may ask for a touch


class SigningError(UsageError):
    """No usable key, a key no allowed signer matches, or ssh-keygen is missing."""


def _ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise SigningError("signing needs OpenSSH's ssh-keygen on PATH (package openssh-client)")
    return found


def _run(args: list[str], stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            [_ssh_keygen(), *args],
            input=stdin,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired:
        raise SigningError(
            f"ssh-keygen did not answer in {TIMEOUT:.0f}s (a key that needs a passphrase "
            "or a touch? load it into ssh-agent and pass its .pub)"
        ) from None


@dataclass(frozen=True)
class Signer:
    """A person's SSH key: a private key file, or a ``.pub`` served by ssh-agent."""

    key: Path

    @classmethod
    def from_option(cls, key: str | None) -> Signer | None:
        """The key of ``--key``, else of $KILLSWITCH_SIGNING_KEY, else none."""
        chosen = key or os.environ.get(KEY_ENV)
        if not chosen:
            return None
        path = Path(chosen).expanduser()
        if not path.is_file():
            where = "--key" if key else f"${KEY_ENV}"
            raise SigningError(f"{where}: no key file at {path}")
        return cls(path)

    def sign(self, message: bytes, namespace: str) -> str:
        """The armored SSH signature of ``message`` in ``namespace``."""
        done = _run(["-Y", "sign", "-q", "-f", str(self.key), "-n", namespace], message)
        signature = done.stdout.decode("ascii", "replace")
        if done.returncode != 0 or "BEGIN SSH SIGNATURE" not in signature:
            why = _first_line(done.stderr) or f"exit {done.returncode}"
            raise SigningError(f"could not sign with {self.key}: {why}")
        return signature

    def principal(self, allowed_signers: Path) -> str:
        """Who ``allowed_signers`` says this key speaks for; refuse a key it does not list."""
        probe = b"killswitch: who holds this key\n"
        found = signers_of(probe, self.sign(probe, APPROVAL), APPROVAL, allowed_signers)
        if not found:
            raise SigningError(f"the key {self.key} is not in {allowed_signers}")
        if len(found) > 1:
            raise SigningError(
                f"the key {self.key} is listed for several principals in {allowed_signers} "
                f"({', '.join(found)}): one key, one person"
            )
        return found[0]


def signers_of(message: bytes, signature: str, namespace: str, allowed_signers: Path) -> list[str]:
    """Every principal of ``allowed_signers`` whose key made ``signature`` over
    ``message`` in ``namespace``; empty when the signature is bad or the key unlisted."""
    if "BEGIN SSH SIGNATURE" not in signature:
        return []
    _readable(allowed_signers)
    with tempfile.TemporaryDirectory(prefix="killswitch-sig-") as scratch:
        sig = Path(scratch) / "message.sig"
        sig.write_text(signature)
        done = _run(["-Y", "find-principals", "-s", str(sig), "-f", str(allowed_signers)], b"")
        if done.returncode != 0:
            return []
        found = [p for p in done.stdout.decode("utf-8", "replace").split() if p]
        return [p for p in found if _verifies(message, sig, namespace, allowed_signers, p)]


def _verifies(
    message: bytes, sig: Path, namespace: str, allowed_signers: Path, principal: str
) -> bool:
    args = ["-Y", "verify", "-f", str(allowed_signers), "-I", principal, "-n", namespace]
    return _run([*args, "-s", str(sig)], message).returncode == 0


def _readable(allowed_signers: Path) -> None:
    if not allowed_signers.is_file():
        raise SigningError(f"allowed_signers file not found: {allowed_signers}")


def _first_line(raw: bytes) -> str:
    lines = raw.decode("utf-8", "replace").strip().splitlines()
    return lines[0] if lines else ""
