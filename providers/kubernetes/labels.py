"""Label keys and selectors, parsed strictly so that nothing a user types can widen them.

A selector from the inventory is parsed into requirements and written back out in
one canonical form: as the ``labelSelector`` query of a list call, and as the
``podSelector`` of a NetworkPolicy. Both always say the same thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set
_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
LABEL_KEY = re.compile(rf"^(?:(?P<prefix>{_DNS_LABEL}(?:\.{_DNS_LABEL})*)/)?(?P<name>{_NAME})$")
LABEL_VALUE = re.compile(rf"^(?:{_NAME})?$")
DNS_LABEL = re.compile(rf"^{_DNS_LABEL}$")  # a namespace
DNS_SUBDOMAIN = re.compile(rf"^{_DNS_LABEL}(?:\.{_DNS_LABEL})*$")  # most object names

_KEY = r"[^\s,()=!]+"
_EQUALS = re.compile(rf"^(?P<key>{_KEY})\s*(?P<op>==|=|!=)\s*(?P<value>[^\s,()=!]*)$")
_SET = re.compile(rf"^(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EXISTS = re.compile(rf"^(?P<neg>!?)\s*(?P<key>{_KEY})$")
MAX_TERMS = 16


def is_label_key(text: str) -> bool:
    found = LABEL_KEY.fullmatch(text)
    return found is not None and len(found["prefix"] or "") <= 253


def is_label_value(text: str) -> bool:
    return bool(LABEL_VALUE.fullmatch(text))


def is_object_name(text: str) -> bool:
    """A lowercase RFC 1123 subdomain: ConfigMap and NetworkPolicy names."""
    return len(text) <= 253 and bool(DNS_SUBDOMAIN.fullmatch(text))


def is_namespace(text: str) -> bool:
    return bool(DNS_LABEL.fullmatch(text))


@dataclass(frozen=True)
class Requirement:
    """One term: ``key=value``, ``key!=value``, ``key in (…)``, ``key notin (…)``,
    ``key`` (exists) or ``!key`` (does not exist)."""

    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.operator in ("=", "!="):
            return f"{self.key}{self.operator}{self.values[0]}"
        if self.operator in ("in", "notin"):
            return f"{self.key} {self.operator} ({','.join(self.values)})"
        return f"!{self.key}" if self.operator == "!" else self.key

    @property
    def narrows(self) -> bool:
        """Whether this term alone pins a label to named values (not just excludes some)."""
        return self.operator in ("=", "in") and all(self.values)


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...]

    def __str__(self) -> str:
        """The canonical ``labelSelector`` text."""
        return ",".join(str(r) for r in self.requirements)

    def as_object(self) -> dict[str, Any]:
        """The same selector as a Kubernetes ``LabelSelector`` (a NetworkPolicy's podSelector)."""
        match_labels: dict[str, str] = {}
        expressions: list[dict[str, Any]] = []
        for r in self.requirements:
            if r.operator == "=" and r.key not in match_labels:
                match_labels[r.key] = r.values[0]
                continue
            operator = {
                "=": "In",
                "in": "In",
                "!=": "NotIn",
                "notin": "NotIn",
                "exists": "Exists",
                "!": "DoesNotExist",
            }[r.operator]
            expression: dict[str, Any] = {"key": r.key, "operator": operator}
            if r.values:
                expression["values"] = list(r.values)
            expressions.append(expression)
        found: dict[str, Any] = {}
        if match_labels:
            found["matchLabels"] = match_labels
        if expressions:
            found["matchExpressions"] = expressions
        return found


def parse_selector(text: str) -> LabelSelector:
    """Parse a label selector; ValueError names the first term that is not allowed.

    It must pin at least one label to named values (``key=value`` or ``key in (…)``):
    a selector of only exclusions (``!x``, ``a!=b``) would pick nearly everything.
    """
    if len(text) > 1024:
        raise ValueError("a selector is at most 1024 characters")
    terms = [t.strip() for t in re.split(r",(?![^(]*\))", text)]
    if not text.strip() or any(not t for t in terms):
        raise ValueError(f"selector {text!r}: empty term")
    if len(terms) > MAX_TERMS:
        raise ValueError(f"selector {text!r}: more than {MAX_TERMS} terms")
    found = tuple(_term(term) for term in terms)
    if not any(r.narrows for r in found):
        raise ValueError(
            f"selector {text!r} must pin a label (key=value or key in (a,b)); "
            "exclusions alone would select nearly every workload"
        )
    return LabelSelector(found)


def _term(term: str) -> Requirement:
    if m := _SET.fullmatch(term):
        values = tuple(v.strip() for v in m["values"].split(","))
        requirement = Requirement(m["key"], m["op"], tuple(sorted(set(values))))
    elif m := _EQUALS.fullmatch(term):
        requirement = Requirement(m["key"], "!=" if m["op"] == "!=" else "=", (m["value"],))
    elif m := _EXISTS.fullmatch(term):
        requirement = Requirement(m["key"], "!" if m["neg"] else "exists")
    else:
        raise ValueError(f"cannot parse selector term {term!r}")
    if not is_label_key(requirement.key):
        raise ValueError(f"{requirement.key!r} is not a label key ([prefix/]name)")
    for value in requirement.values:
        if not is_label_value(value):
            raise ValueError(f"{value!r} is not a label value")
    if requirement.operator in ("in", "notin") and not all(requirement.values):
        raise ValueError(f"selector term {term!r}: empty value in the set")
    return requirement


def model_selector(model: str) -> LabelSelector:
    """The default: ``killswitch.io/model=<model>``."""
    return LabelSelector((Requirement("killswitch.io/model", "=", (model,)),))
