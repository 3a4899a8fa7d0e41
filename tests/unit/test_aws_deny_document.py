"""The deny document for the largest inventory killswitch accepts fits AWS's size limits."""

from __future__ import annotations

import string

from killswitch.domain import Access, Posture
from providers.aws.bedrock_access import (
    MAX_MANAGED_POLICY,
    MAX_SCP,
    UNLISTED,
    ModelPaths,
    render,
    size,
)
from providers.aws.config import MAX_BUILT_ON, MAX_IDS, known_regions

REVOKED = Access(Posture.REVOKED)
# Sixteen audiences of the longest name the CLI accepts (63 characters).
AUDIENCES = tuple((letter * 63) for letter in string.ascii_lowercase[:16])


def largest_paths() -> ModelPaths:
    return ModelPaths(
        tuple(f"anthropic.claude-opus-4-{i}-20250514-v1:0" for i in range(MAX_IDS)),
        tuple(f"a1b2c3d4e5f{i}" for i in range(MAX_BUILT_ON)),
        tuple(f"p1b2c3d4e5f{i}" for i in range(MAX_BUILT_ON)),
    )


def test_export_control_over_every_region_fits_a_managed_policy_and_an_scp() -> None:
    restricted = Access(Posture.RESTRICTED, AUDIENCES)
    regions = sorted(known_regions({"bedrock"}))
    # Every region listed; the US ones restricted to 16 audiences, the rest and every
    # region AWS adds later revoked: the export-control order on the largest inventory.
    postures = {r: restricted if r.startswith("us-") else REVOKED for r in regions}
    postures[UNLISTED] = REVOKED

    document = render(postures, largest_paths(), "killswitch-audience")

    assert size(document) <= MAX_MANAGED_POLICY
    assert size(document) <= MAX_SCP


def test_restricted_everywhere_but_revoked_regions_fits_too() -> None:
    restricted = Access(Posture.RESTRICTED, AUDIENCES)
    regions = sorted(known_regions({"bedrock"}))
    postures = {r: REVOKED if r.startswith("eu-") else restricted for r in regions}
    postures[UNLISTED] = restricted

    assert size(render(postures, largest_paths(), "killswitch-audience")) <= MAX_MANAGED_POLICY
