"""Provider plug-ins are checked when they load (killswitch/registry.py): a plug-in that
breaks the contract is refused with exit 64, naming the entry point and what it lacks,
before anything is read or changed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel

from killswitch import registry
from killswitch.contract import Permission
from killswitch.domain import Posture
from killswitch.sdk import ProviderBase, Wave

BROKEN = '''
from typing import ClassVar
from pydantic import BaseModel
from killswitch.sdk import ProviderBase, Permission


class Config(BaseModel):
    regions: list[str]


class Silent:
    """A lever that says neither what it can express nor what it needs."""

    name = "broken.silent"
    wave = 0
    permissions = ()

    def __init__(self, provider): ...
    def observe(self, target): ...
    def apply(self, target, desired, ctx): ...


class Broken(ProviderBase):
    type = "broken"
    config_model = Config
    levers = {"silent": "broken_plugin:Silent"}


class Future(Broken):
    type = "future"
    api_version = 2
'''


class Config(BaseModel):
    regions: list[str]


class Speaks:
    name: ClassVar[str] = "fine.speaks"
    supports: ClassVar[frozenset[Posture]] = frozenset({Posture.OPEN, Posture.REVOKED})
    wave: ClassVar[int] = Wave.EDGE
    permissions: ClassVar[tuple[Permission, ...]] = (Permission("write", "*"),)

    def observe(self) -> None: ...

    def apply(self) -> None: ...


class Mute(Speaks):
    supports: ClassVar[frozenset[Posture]] = frozenset()
    permissions: ClassVar[tuple[Permission, ...]] = ()


class Fine(ProviderBase):
    type: ClassVar[str] = "fine"
    config_model: ClassVar[type[BaseModel]] = Config
    levers: ClassVar[dict[str, str]] = {"speaks": f"{__name__}:Speaks"}


class Quiet(Fine):
    levers: ClassVar[dict[str, str]] = {"mute": f"{__name__}:Mute"}


class FromTheFuture(Fine):
    api_version: ClassVar[int] = 2


@pytest.mark.parametrize("provider_type", ["aws", "partner", "kubernetes", "jsonfile"])
def test_every_installed_provider_loads_through_the_checks(provider_type: str) -> None:
    assert provider_type in registry.provider_types()
    assert registry.load(provider_type).type == provider_type


def test_a_provider_that_keeps_the_contract_has_no_problems() -> None:
    assert registry.check_provider(Fine, "fine") == []
    assert Fine.mechanism_names == frozenset({"speaks"})


def test_a_lever_declaring_no_postures_and_no_permissions_is_named_with_both() -> None:
    assert registry.check_provider(Quiet, "fine") == [
        "lever 'mute': declares no postures it supports (supports)",
        "lever 'mute': declares no permissions",
    ]


def test_a_plug_in_for_another_api_version_is_refused_before_anything_else() -> None:
    assert registry.check_provider(FromTheFuture, "fine") == [
        "targets API version 2; this killswitch speaks 1"
    ]


def test_a_plug_in_registered_under_another_name_or_missing_parts_is_told_which() -> None:
    class Bare:
        type = "bare"

    assert registry.check_provider(Bare, "other") == [
        "declares type 'bare', but is registered as 'other'",
        "config_model is not a pydantic model",
        "mechanism_names names no lever",
        "has no method check()",
        "has no method targets()",
        "has no method mechanism()",
    ]
    assert registry.check_provider(Bare(), "bare")[0].endswith("is not a class")


def test_a_plug_in_may_not_be_called_not_since_not_colon_excludes_targets() -> None:
    class Not(Fine):
        type: ClassVar[str] = "not"

    assert registry.check_provider(Not, "not") == [
        "the type name 'not' is reserved: `not:` starts a selector's exclusion"
    ]


def test_a_lever_table_naming_a_missing_class_is_refused() -> None:
    class Typo(Fine):
        levers: ClassVar[dict[str, str]] = {"speaks": f"{__name__}:Speak"}

    [problem] = registry.check_provider(Typo, "fine")

    assert problem.startswith(f"lever 'speaks': {__name__}:Speak cannot be imported:")


def plug_in(folder: Path) -> Path:
    """An installed distribution, as importlib.metadata finds one on sys.path: a module
    and a dist-info with its entry points (what pip would leave behind)."""
    folder.mkdir()
    (folder / "broken_plugin.py").write_text(BROKEN)
    info = folder / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[killswitch.providers]\n"
        "broken = broken_plugin:Broken\n"
        "future = broken_plugin:Future\n"
        "missing = broken_plugin_gone:Provider\n"
    )
    return folder


@pytest.mark.parametrize(
    ("provider_type", "refusal"),
    [
        (
            "broken",
            "provider plug-in broken = 'broken_plugin:Broken' refused: lever 'silent': "
            "declares no postures it supports (supports); lever 'silent': declares no "
            "permissions",
        ),
        (
            "future",
            "provider plug-in future = 'broken_plugin:Future' refused: targets API "
            "version 2; this killswitch speaks 1",
        ),
        (
            "missing",
            "provider plug-in missing = 'broken_plugin_gone:Provider' refused: cannot be "
            "imported: ModuleNotFoundError: No module named 'broken_plugin_gone'",
        ),
    ],
)
def test_an_installed_broken_plug_in_is_refused_at_load_with_exit_64_naming_it(
    tmp_path: Path, provider_type: str, refusal: str
) -> None:
    site = plug_in(tmp_path / "site")
    inventory = tmp_path / "killswitch.yaml"
    inventory.write_text(
        textwrap.dedent(f"""\
            version: 1
            state: sqlite:///./state.db
            models: {{mythos-5: {{}}}}
            providers:
              edge: {{type: {provider_type}, regions: [eu-west]}}
            """)
    )
    script = "from killswitch.cli import main; main()"

    done = subprocess.run(
        [sys.executable, "-c", script, "--inventory", str(inventory), "inventory", "validate"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"},
    )

    assert done.returncode == 64, done.stdout + done.stderr
    assert refusal in done.stderr
    assert f"{inventory}:5:" in done.stderr  # the inventory line that names the type
    assert "Traceback" not in done.stderr
