"""One person, one name: how killswitch spells who acts, and what it refuses."""

from __future__ import annotations

import pytest

from killswitch.identity import IdentityError, normalise, principal_from_arn


@pytest.mark.parametrize(
    "spelling", ["alice", "Alice", "ALICE", " alice ", "ａｌｉｃｅ", "alice\n"]
)
def test_every_spelling_of_one_name_is_the_same_person(spelling: str) -> None:
    assert normalise(spelling) == "alice"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("alice\u200b", "invisible"),  # zero-width space
        ("al\u00adice", "invisible"),  # soft hyphen
        ("\u0430lice", "scripts"),  # a Cyrillic a among Latin letters
        ("alic\u0435@example.com", "scripts"),  # a Cyrillic e
        ("al ice", "space"),
        ("alice\u202e", "invisible"),  # right-to-left override
        ("", "empty"),
        ("   ", "empty"),
        ("a" * 129, "longer"),
    ],
)
def test_a_name_that_could_pass_for_another_is_refused(name: str, why: str) -> None:
    with pytest.raises(IdentityError, match=why):
        normalise(name)


def test_names_in_one_script_are_people_too() -> None:
    assert normalise("Алиса") == "алиса"
    assert normalise("山田たろう@example.jp") == "山田たろう@example.jp"


@pytest.mark.parametrize(
    ("arn", "principal"),
    [
        ("arn:aws:iam::123456789012:user/alice", "alice@123456789012"),
        ("arn:aws:iam::123456789012:user/ml/oncall/Alice", "alice@123456789012"),
        ("arn:aws:sts::123456789012:assumed-role/Admin/alice.sso", "alice.sso@123456789012"),
        ("arn:aws:sts::210987654321:assumed-role/aws-reserved/sso/Ops/bob", "bob@210987654321"),
        ("arn:aws:sts::123456789012:federated-user/carol", "carol@123456789012"),
        ("arn:aws:iam::123456789012:root", "root@123456789012"),
        ("arn:aws-us-gov:iam::123456789012:user/dave", "dave@123456789012"),
    ],
)  # fmt: skip
def test_an_aws_caller_is_the_person_behind_the_role_with_the_account(
    arn: str, principal: str
) -> None:
    assert principal_from_arn(arn) == principal


@pytest.mark.parametrize("arn", ["arn:aws:iam:::user/x", "not-an-arn", "arn:aws:s3:::bucket/key"])
def test_an_unexpected_caller_arn_is_refused(arn: str) -> None:
    with pytest.raises(IdentityError):
        principal_from_arn(arn)
