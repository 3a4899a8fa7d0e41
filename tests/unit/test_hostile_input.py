"""Hostile and careless input (property-based): whatever is typed into an inventory, a
selector or a flag, the answer is a clear message and exit 64, never a traceback, and
no name can widen an ARN, a parameter path, a label selector or a URL."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from killswitch import inventory
from killswitch.cli import main
from killswitch.domain import NAME_PATTERN, is_valid_name
from killswitch.errors import InventoryError, UsageError
from killswitch.selectors import Selector, resolve
from tests.unit.test_inventory import GOOD

# What a tired human, a bad paste or an attacker puts where a name goes.
NASTY = st.one_of(
    st.sampled_from(
        [
            "*",
            "**",
            "..",
            "../etc",
            "a/b",
            "a\nb",
            "a b",
            "'",
            '"',
            "$(id)",
            "${x}",
            "%2F",
            "mythos-5*",
            "mythos-5\u200b",
            "mythоs-5",  # a zero-width space; a Cyrillic look-alike letter
            "MYTHOS-5",
            "-mythos",
            "mythos-",
            "a" * 64,
            "",
            " ",
            "\t",
            "null",
            "~",
            "?",
            "[a-z]",
            "!",
            "!!",
            "all",
            "us-east-1/..",
            "arn:aws:iam::*",
            "killswitch.io/model",
        ]
    ),
    st.text(min_size=0, max_size=20),
)
SETTINGS = settings(
    max_examples=int(os.environ.get("KILLSWITCH_EXAMPLES", "150")),  # `make soak` tries more
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _write(tmp: Path, text: str) -> Path:
    path = tmp / "killswitch.yaml"
    path.write_text(text)
    return path


@SETTINGS
@given(name=NASTY)
def test_a_model_name_either_matches_the_strict_pattern_or_is_refused(
    tmp_path_factory: object, name: str
) -> None:
    tmp = tmp_path_factory.mktemp("inv")  # type: ignore[attr-defined]
    doc = yaml.safe_load(GOOD)
    doc["models"] = {name: {}}
    doc["scopes"] = {}
    path = _write(tmp, yaml.safe_dump(doc))
    try:
        loaded = inventory.load(path)
    except InventoryError as exc:
        assert str(path) in str(exc)
        return
    for model in loaded.models:
        assert NAME_PATTERN.fullmatch(model) and ".." not in model


@st.composite
def documents(draw: st.DrawFn) -> object:
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12), NASTY)
    tree = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.one_of(st.text(max_size=10), NASTY), inner, max_size=4),
        ),
        max_leaves=12,
    )
    base = yaml.safe_load(GOOD)
    key = draw(st.sampled_from([*base.keys(), "extra"]))
    if draw(st.booleans()):
        base[key] = draw(tree)
        return base
    return draw(tree)


@SETTINGS
@given(doc=documents())
def test_any_yaml_document_loads_or_is_refused_with_its_location(
    tmp_path_factory: object, doc: object
) -> None:
    tmp = tmp_path_factory.mktemp("inv")  # type: ignore[attr-defined]
    path = _write(tmp, yaml.safe_dump(doc))
    try:
        inventory.load(path)
    except InventoryError as exc:
        assert all(p.startswith(str(path)) for p in exc.problems), exc.problems


@SETTINGS
@given(text=st.text(max_size=200))
def test_any_bytes_as_an_inventory_are_refused_cleanly(tmp_path_factory: object, text: str) -> None:
    tmp = tmp_path_factory.mktemp("inv")  # type: ignore[attr-defined]
    path = _write(tmp, text)
    try:
        inventory.load(path)
    except InventoryError as exc:
        assert str(path) in str(exc)


@SETTINGS
@given(
    models=st.lists(NASTY, max_size=3),
    regions=st.lists(NASTY, max_size=3),
    targets=st.lists(NASTY, max_size=2),
)
def test_selectors_never_reach_beyond_the_inventory(
    tmp_path_factory: object, models: list[str], regions: list[str], targets: list[str]
) -> None:
    tmp = tmp_path_factory.mktemp("inv")  # type: ignore[attr-defined]
    inv = inventory.load(_write(tmp, GOOD))
    universe = {t.id for name in inv.provider_names for t in inv.provider(name).targets()}
    try:
        picked = resolve(inv, Selector(tuple(models), tuple(regions), (), tuple(targets)))
    except UsageError:
        return
    assert {t.id for t in picked} <= universe
    assert all(is_valid_name(t.model) for t in picked)


FLAGS = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "-m",
                "--model",
                "-r",
                "--region",
                "-p",
                "--target",
                "-s",
                "--scope",
                "-o",
                "--output",
                "--audience",
                "-a",
                "--reason",
                "--yes",
                "--dry-run",
                "json",
                "table",
                "all",
                "!us-*",
                "mythos-5",
                "--",
                "-",
                "--help-me",
                "--concurrency",
                "0",
            ]
        ),
        NASTY,
    ),
    max_size=6,
)


@SETTINGS
@given(
    command=st.sampled_from(
        [
            "plan revoke",
            "status",
            "drift",
            "revoke",
            "restrict",
            "inventory validate",
            "ops show",
            "audit verify",
        ]
    ),
    flags=FLAGS,
)
def test_random_flags_get_a_clear_answer_never_a_traceback(
    tmp_path_factory: object, command: str, flags: list[str]
) -> None:
    tmp = tmp_path_factory.mktemp("cli")  # type: ignore[attr-defined]
    # Nothing listens on port 9: a command that got as far as AWS fails fast, changes nothing.
    path = _write(tmp, GOOD.replace("http://127.0.0.1:5000", "http://127.0.0.1:9"))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(["--inventory", str(path), *command.split(), *flags])
        except SystemExit as exc:
            code = int(exc.code or 0)
    assert "Traceback" not in err.getvalue()
    assert code in (0, 2, 3, 4, 5, 64), (code, err.getvalue())
    if code == 64:
        assert err.getvalue().strip(), "a usage error must say what is wrong"
