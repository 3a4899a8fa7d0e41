"""A tired human's inventory mistakes: each named by file, line and field, exit 64."""

from __future__ import annotations

from pathlib import Path

import pytest

from killswitch import inventory
from killswitch.errors import ExitCode, InventoryError

GOOD = """\
version: 1
state: sqlite:///./state.db
models:
  mythos-5: {}
  fable-5:
providers:
  aws-prod:
    type: aws
    regions: [us-east-1, us-west-2, eu-west-1]
    mechanisms: [ssm-flag]
    endpoint_url: http://127.0.0.1:5000
    profile: prod
scopes:
  export-control: {models: [mythos-5, fable-5], regions: ["*"]}
policy:
  restore: {approvals: 2}
"""


def _load(tmp_path: Path, text: str) -> inventory.Inventory:
    path = tmp_path / "killswitch.yaml"
    path.write_text(text)
    return inventory.load(path)


def _problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        _load(tmp_path, text)
    assert caught.value.exit_code is ExitCode.USAGE
    return caught.value.problems


def test_the_documented_example_loads(tmp_path: Path) -> None:
    inv = _load(tmp_path, GOOD)

    assert inv.models == ["mythos-5", "fable-5"]
    assert inv.provider_names == ["aws-prod"]
    assert inv.state_url == f"sqlite:///{tmp_path / 'state.db'}"
    assert inv.spec.policy.restore.approvals == 2


def test_region_typo_names_line_and_suggests(tmp_path: Path) -> None:
    text = GOOD.replace(
        "[us-east-1, us-west-2, eu-west-1]", "\n      - us-east-1\n      - us-est-1"
    )

    [problem] = _problems(tmp_path, text)

    assert problem.startswith(f"{tmp_path / 'killswitch.yaml'}:11: ")
    assert "providers.aws-prod.regions.1" in problem
    assert "'us-est-1'" in problem
    assert "'us-east-1'" in problem.partition("did you mean")[2]


def test_unknown_mechanism_is_caught_before_anything_runs(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, GOOD.replace("[ssm-flag]", "[ssm-flags]"))

    assert ":10: providers.aws-prod.mechanisms.0: unknown mechanism 'ssm-flags'" in problem


def test_unknown_key_is_named(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, GOOD.replace("    profile: prod", "    profle: prod"))

    assert ":12: providers.aws-prod.profle:" in problem


def test_unknown_provider_type(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, GOOD.replace("type: aws", "type: azure"))

    assert ":8: providers.aws-prod.type: unknown provider type 'azure'" in problem


def test_missing_version_points_at_the_top(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, GOOD.replace("version: 1\n", ""))

    assert ": version: Field required" in problem


def test_wrong_version(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, GOOD.replace("version: 1", "version: 2"))

    assert ":1: version:" in problem


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, GOOD.replace("  fable-5:", "  fable-5: [unclosed"))

    assert "not valid YAML" in problem
    assert "killswitch.yaml:" in problem


def test_model_name_that_could_widen_a_path_is_refused(tmp_path: Path) -> None:
    for bad in ("'*'", "'../etc'", "'My Model'", "'a/b'", "'mythos-5\\n'"):
        problems = _problems(tmp_path, GOOD.replace("  fable-5:\n", f"  {bad}: {{}}\n"))
        assert any("models." in p and "model name must match" in p for p in problems), bad


def test_scope_naming_an_unknown_model(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, GOOD.replace("[mythos-5, fable-5]", "[mythos-5, fable5]"))

    assert ":14: scopes.export-control.models.1: unknown model 'fable5'" in problem


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("us-west-2", "us-wset-2").replace("[ssm-flag]", "[ssm]")

    assert len(_problems(tmp_path, text)) == 2


def test_missing_file_says_how_to_point_at_one(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as caught:
        inventory.load(tmp_path / "nope.yaml")

    assert "--inventory" in str(caught.value)
    assert "KILLSWITCH_INVENTORY" in str(caught.value)


def test_inline_secret_like_field_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace("    profile: prod", "    aws_secret_access_key: abc")

    [problem] = _problems(tmp_path, text)

    assert "aws_secret_access_key" in problem
    assert "abc" not in problem


def test_a_key_given_twice_is_refused_not_silently_dropped(tmp_path: Path) -> None:
    text = GOOD.replace("scopes:", "  aws-prod:\n    type: aws\nscopes:")

    [problem] = _problems(tmp_path, text)

    assert ":13: aws-prod: given twice" in problem


def test_unsupported_state_url(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, GOOD.replace("sqlite:///./state.db", "postgres://db/ks"))

    assert ":2: state:" in problem
    assert "sqlite:///" in problem


def test_scope_naming_a_region_the_inventory_lacks(tmp_path: Path) -> None:
    text = GOOD.replace('regions: ["*"]', "regions: [eu-wset-1]")

    [problem] = _problems(tmp_path, text)

    assert ":14: scopes.export-control:" in problem
    assert "eu-wset-1" in problem
    assert "did you mean 'eu-west-1'" in problem


def test_scope_may_name_a_provider_type(tmp_path: Path) -> None:
    inv = _load(tmp_path, GOOD.replace('regions: ["*"]}', 'regions: ["*"], providers: [aws]}'))

    assert inv.spec.scopes["export-control"].providers == ["aws"]


def test_rate_limit_for_an_unknown_service(tmp_path: Path) -> None:
    text = GOOD.replace("    profile: prod", "    rate_limits: {sms: {read: 1, write: 1}}")

    [problem] = _problems(tmp_path, text)

    assert "providers.aws-prod.rate_limits.sms: unknown service 'sms'" in problem


def test_accounts_without_a_role_to_assume(tmp_path: Path) -> None:
    text = GOOD.replace("    profile: prod", "    accounts: [{id: '111111111111'}]")

    [problem] = _problems(tmp_path, text)

    assert "providers.aws-prod.accounts.0: no role to assume" in problem
