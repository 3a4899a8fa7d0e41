"""Every input is bounded: YAML that nests or aliases without end, state URLs that name
devices or odd files, numbers typed as booleans or strings, and text too long, too wide
or full of terminal escapes. Each gets exit 64 naming the file, line or flag, and
nothing is created or changed."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from killswitch.cli import main
from killswitch.contract import ApplyContext
from killswitch.domain import Access, Posture
from killswitch.text import MAX_ACTOR_CHARS, MAX_REASON_CHARS, MAX_TICKET_CHARS, printable
from providers.flag import flag_document
from tests.unit.test_inventory import GOOD

SSM_STANDARD_LIMIT = 4096  # bytes of a Standard-tier parameter value


def cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            return int(exc.code or 0), out.getvalue(), err.getvalue()
    raise AssertionError("main() always exits")


def validate(path: Path) -> tuple[int, str]:
    code, _, err = cli("--inventory", str(path), "inventory", "validate")
    return code, err


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
    for n in range(1, levels + 1):
        lines.append(f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


# -- YAML that would expand or nest without end ---------------------------------------


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (GOOD + "x-bomb:\n" + "".join("  " + line + "\n" for line in alias_bomb().splitlines()),
         "aliases are expanded"),
        ("[" * 20_000, "levels deep"),
        ("{a: " * 3_000, "levels deep"),
        ("a: &a [*a]\n", "aliases are expanded"),
    ],
    ids=["alias-bomb", "deep-lists", "deep-maps", "self-reference"],
)  # fmt: skip
def test_a_yaml_bomb_is_refused_with_its_file_and_line(
    tmp_path: Path, text: str, says: str
) -> None:
    path = tmp_path / "killswitch.yaml"
    path.write_text(text)

    code, err = validate(path)

    assert code == 64, err
    assert f"{path}:" in err and says in err
    assert "Traceback" not in err and "RecursionError" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killswitch.yaml"]


def test_a_runbook_bomb_is_refused_too(tmp_path: Path) -> None:
    book = tmp_path / "bomb.yaml"
    book.write_text("name: bomb\nsteps: []\n" + alias_bomb())

    code, _, err = cli("runbook", "validate", str(book))

    assert code == 64, err
    assert f"{book}:" in err and "aliases are expanded" in err


def test_a_file_larger_than_the_bound_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "killswitch.yaml"
    path.write_text(GOOD + "# " + "x" * 1_100_000 + "\n")

    code, err = validate(path)

    assert code == 64 and "larger than 1,000,000 bytes" in err


@settings(
    max_examples=int(os.environ.get("KILLSWITCH_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    levels=st.integers(1, 12),
    width=st.integers(1, 12),
    depth=st.integers(0, 200),
)
def test_aliases_and_depth_of_any_shape_give_a_clear_answer(
    tmp_path: Path, levels: int, width: int, depth: int
) -> None:
    path = tmp_path / "killswitch.yaml"
    nested = "[" * depth + "1" + "]" * depth
    path.write_text(GOOD + "x-extra:\n" + "".join(
        "  " + line + "\n" for line in alias_bomb(levels, width).splitlines()
    ) + f"x-deep: {nested}\n")  # fmt: skip

    code, err = validate(path)

    # Unknown top-level keys are refused anyway: what matters is how.
    assert code == 64
    assert f"{path}:" in err
    assert "Traceback" not in err and "unexpected error" not in err


# -- state URLs and numbers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "says"),
    [
        ("sqlite:////dev/null", "under /dev"),
        ("sqlite:////proc/self/state.db", "under /proc"),
        ("sqlite:///./state.db?mode=ro", "?query"),
        ("sqlite:///./state.db#frag", "#fragment"),
        ("sqlite:///../../state.db", "'..'"),
        ("sqlite:///%2e%2e/state.db", "%-escape"),
        ("sqlite:///", "names no file"),
        ("sqlite:///./folder/", "names no file"),
    ],
)
def test_a_state_url_naming_a_device_or_an_odd_file_is_refused(
    tmp_path: Path, state: str, says: str
) -> None:
    path = tmp_path / "killswitch.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(GOOD) | {"state": state}))

    code, err = validate(path)

    assert code == 64, err
    assert f"{path}:" in err and "state" in err and says in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killswitch.yaml"]


def test_a_state_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state.db").mkdir()
    path = tmp_path / "killswitch.yaml"
    path.write_text(yaml.safe_dump(yaml.safe_load(GOOD) | {"state": "sqlite:///state.db"}))

    code, err = validate(path)

    assert code == 64 and "is not a regular file" in err


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("version", "1.0"),
        ("version", "true"),
        ("version", "'1'"),
        ("version", "2"),
        ("approvals", "true"),
        ("approvals", "'2'"),
        ("approvals", "2.0"),
        ("ttl_seconds", "true"),
        ("ttl_seconds", "'60'"),
    ],
)
def test_numbers_are_numbers_not_booleans_strings_or_floats(
    tmp_path: Path, key: str, value: str
) -> None:
    doc = yaml.safe_load(GOOD)
    raw = yaml.safe_load(value)
    if key == "version":
        doc["version"] = raw
    elif key == "approvals":
        doc.setdefault("policy", {})["restore"] = {"approvals": raw}
    else:
        doc.setdefault("policy", {})["lock"] = {"ttl_seconds": raw}
    path = tmp_path / "killswitch.yaml"
    path.write_text(yaml.safe_dump(doc))

    code, err = validate(path)

    assert code == 64, err
    assert f"{path}:" in err and key in err


# -- text --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--reason", "r" * (MAX_REASON_CHARS + 1), "at most 1000 characters"),
        ("--reason", "😀" * 999 + "x" * 2, "bytes of UTF-8"),
        ("--reason", "evil \x1b[2J\x1b]0;pwned\x07", "control character"),
        ("--ticket", "T" * (MAX_TICKET_CHARS + 1), "--ticket: at most 128"),
        ("--ticket", "INC-1\nINC-2", "control character"),
        ("--actor", "a" * (MAX_ACTOR_CHARS + 1), "--actor: at most 128"),
        ("--actor", "alice\u202egnp.exe", "control character"),
        ("--reason", "   ", "must say"),
    ],
)
def test_text_too_long_too_wide_or_with_controls_is_refused_before_anything(
    tmp_path: Path, flag: str, value: str, says: str
) -> None:
    path = tmp_path / "killswitch.yaml"
    path.write_text(GOOD)
    args = {"--reason": "export order", "--ticket": "INC-1", "--actor": "alice"} | {flag: value}

    code, _, err = cli("--inventory", str(path), "--actor", args["--actor"], "revoke",
                       "-m", "all", "--reason", args["--reason"], "--ticket", args["--ticket"],
                       "--yes")  # fmt: skip

    assert code == 64, err
    assert says in err
    assert "\x1b" not in err and "\u202e" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["killswitch.yaml"]  # no state made


def test_the_flag_document_fits_a_standard_parameter_for_the_largest_accepted_input() -> None:
    ctx = ApplyContext(
        op_id="op-k0123456789a.99",
        actor="\U0001f600" * MAX_ACTOR_CHARS,  # 4 bytes each in UTF-8
        reason="\u6f22" * MAX_REASON_CHARS,  # a legal 1,000-character CJK reason
        ticket="\U0001f600" * MAX_TICKET_CHARS,
        at="2026-11-29T23:59:59.999Z",
    )
    audience = tuple(f"{'a' * 60}-{n:02d}" for n in range(16))

    document = flag_document("m" * 63, Access(Posture.RESTRICTED, audience), ctx)

    assert len(document.encode("utf-8")) <= SSM_STANDARD_LIMIT
    parsed = json.loads(document)
    assert parsed["reason"].startswith("\u6f22" * 100)  # UTF-8, not \\u-escaped
    assert "\\u" not in document
    assert parsed["audience"] == sorted(audience)


def test_printed_text_shows_escapes_and_hides_url_passwords() -> None:
    shown = printable("ok \x1b[31mred\x1b[0m via http://ops:hunter2@127.0.0.1:9/x \u202e")

    assert "\x1b" not in shown and "\u202e" not in shown
    assert "\\x1b[31m" in shown
    assert "hunter2" not in shown and "ops:***@127.0.0.1" in shown
