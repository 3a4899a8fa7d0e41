"""Selectors pick exactly the targets a person means, and refuse what they mistyped."""

from __future__ import annotations

from pathlib import Path

import pytest

from killswitch import inventory
from killswitch.errors import UsageError
from killswitch.selectors import Selector, resolve
from tests.unit.test_inventory import GOOD


@pytest.fixture
def inv(tmp_path: Path) -> inventory.Inventory:
    path = tmp_path / "killswitch.yaml"
    path.write_text(GOOD)
    return inventory.load(path)


def _pick(inv: inventory.Inventory, **kwargs: object) -> set[tuple[str, str]]:
    targets = resolve(inv, Selector(**kwargs))  # type: ignore[arg-type]
    return {(t.model, t.region) for t in targets}


def test_all_models_in_every_region(inv: inventory.Inventory) -> None:
    assert len(_pick(inv, models=("all",))) == 6


def test_exclude_glob_leaves_the_us_out(inv: inventory.Inventory) -> None:
    assert _pick(inv, models=("mythos-5",), regions=("!us-*",)) == {("mythos-5", "eu-west-1")}


@pytest.mark.parametrize("exclude", ["!us-*", "not:us-*"])
def test_not_colon_excludes_like_a_bang_and_needs_no_quoting_in_bash(
    inv: inventory.Inventory, exclude: str
) -> None:
    assert _pick(inv, models=("all",), regions=(exclude,)) == {
        ("mythos-5", "eu-west-1"),
        ("fable-5", "eu-west-1"),
    }


def test_not_colon_excludes_models_providers_and_target_ids_too(
    inv: inventory.Inventory,
) -> None:
    assert _pick(inv, models=("not:fable-5",), regions=("not:us-*",)) == {("mythos-5", "eu-west-1")}
    with pytest.raises(UsageError, match="matched no targets"):
        _pick(inv, models=("all",), providers=("not:aws",))
    assert _pick(inv, targets=("aws:*", "not:aws:aws-prod/us-*/ssm-flag/*")) == {
        ("mythos-5", "eu-west-1"),
        ("fable-5", "eu-west-1"),
    }


def test_a_mistyped_name_after_not_colon_is_still_an_error(inv: inventory.Inventory) -> None:
    with pytest.raises(UsageError) as caught:
        _pick(inv, models=("all",), regions=("not:eu-wst-1",))

    assert "--region eu-wst-1: unknown (did you mean 'eu-west-1'?)" in str(caught.value)


def test_all_beside_a_name_still_means_all(inv: inventory.Inventory) -> None:
    assert len(_pick(inv, models=("all", "mythos-5"))) == 6


def test_globs_and_names_combine(inv: inventory.Inventory) -> None:
    picked = _pick(inv, models=("*-5",), regions=("us-east-1", "eu-*"))

    assert picked == {(m, r) for m in ("mythos-5", "fable-5") for r in ("us-east-1", "eu-west-1")}


def test_scope_and_flags_intersect(inv: inventory.Inventory) -> None:
    assert _pick(inv, scope="export-control", regions=("eu-west-1",)) == {
        ("mythos-5", "eu-west-1"),
        ("fable-5", "eu-west-1"),
    }


def test_provider_type_selects_its_instances(inv: inventory.Inventory) -> None:
    assert len(_pick(inv, models=("all",), providers=("aws",))) == 6


def test_target_glob(inv: inventory.Inventory) -> None:
    picked = _pick(inv, targets=("aws:aws-prod/us-*/ssm-flag/fable-5",))

    assert picked == {("fable-5", "us-east-1"), ("fable-5", "us-west-2")}


@pytest.mark.parametrize(
    ("flag", "kwargs", "expected"),
    [
        ("--model", {"models": ("mythos5",)}, "did you mean 'mythos-5'?"),
        ("--region", {"models": ("all",), "regions": ("us-est-1",)}, "'us-east-1'"),
        ("--region", {"models": ("all",), "regions": ("!eu-wst-1",)}, "eu-wst-1"),
        ("--provider", {"models": ("all",), "providers": ("aws-prd",)}, "aws-prd"),
        ("--scope", {"scope": "export"}, "unknown scope"),
        ("--model", {"models": ("all", "mythos-9")}, "mythos-9"),
    ],
)
def test_unknown_names_are_usage_errors(
    inv: inventory.Inventory, flag: str, kwargs: dict[str, object], expected: str
) -> None:
    with pytest.raises(UsageError) as caught:
        _pick(inv, **kwargs)

    assert flag in str(caught.value)
    assert expected in str(caught.value)


def test_a_selector_matching_nothing_is_an_error(inv: inventory.Inventory) -> None:
    with pytest.raises(UsageError, match="matched no targets"):
        _pick(inv, models=("all",), regions=("ap-*",))
