"""Lever ``network-policy``: one NetworkPolicy per model and namespace, ``killswitch-<model>``,
selecting the model's pods.

- ``revoked``: the policy admits no ingress at all;
- ``restricted``: it admits ingress only from namespaces labelled with an allowed
  audience (``<audience_label> in (<audience>…)``);
- ``open``: that one policy is deleted (a policy already gone is already open).

NetworkPolicies add up, so other policies (which killswitch never reads or writes)
cannot reopen what this one closes. A policy of that name that killswitch did not
create (no ``app.kubernetes.io/managed-by=killswitch`` label) is refused, not taken over.
"""

from __future__ import annotations

from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from killswitch.contract import ApplyContext, Permission
from killswitch.domain import OPEN, Access, Observed, Posture, Target
from killswitch.errors import PermanentError
from killswitch.sdk import Wave
from providers.kubernetes.client import NotFound, Obj, guarded
from providers.kubernetes.config import POLICY_PREFIX
from providers.kubernetes.namespaces import combine

if TYPE_CHECKING:
    from providers.kubernetes import KubernetesProvider

MANAGED_BY = ("app.kubernetes.io/managed-by", "killswitch")
POLICY = "networkpolicies.networking.k8s.io"


class PolicyEdited(PermanentError):
    """Our policy no longer says what killswitch wrote (edited by hand, or the selector changed)."""


class NetworkPolicyLever:
    name: ClassVar[str] = "kubernetes.network-policy"
    supports: ClassVar[frozenset[Posture]] = frozenset(Posture)
    wave: ClassVar[int] = Wave.ACCESS
    permissions: ClassVar[tuple[Permission, ...]] = (
        Permission("get", f"{POLICY}/{POLICY_PREFIX}{{model}}"),
        Permission("update", f"{POLICY}/{POLICY_PREFIX}{{model}}"),
        Permission("delete", f"{POLICY}/{POLICY_PREFIX}{{model}}"),
        # RBAC cannot limit create to a name: the name is in the body, not the URL.
        Permission("create", POLICY),
    )

    def __init__(self, provider: KubernetesProvider) -> None:
        self.provider = provider

    def observe(self, target: Target) -> Observed:
        name = POLICY_PREFIX + target.model
        found = {}
        for ns in self.provider.namespaces:
            policy = self._read(ns, name)
            if policy is None:
                found[ns] = Observed(OPEN, "no policy")
                continue
            self._check_ours(ns, policy)
            version = policy["metadata"]["resourceVersion"]
            access = self._access(ns, policy, target.model)
            found[ns] = Observed(access, f"{name} resourceVersion {version}")
        return combine(f"networkpolicy {name}", found)

    def apply(self, target: Target, desired: Access, ctx: ApplyContext) -> None:
        for ns in self.provider.namespaces:
            guarded(partial(self._converge, ns, target.model, desired, ctx))

    def spec(self, model: str, access: Access) -> Obj:
        """The policy's spec for ``access`` (revoked or restricted)."""
        spec: Obj = {
            "podSelector": self.provider.selector(model).as_object(),
            "policyTypes": ["Ingress"],
        }
        if access.posture is Posture.RESTRICTED:
            audience = {
                "key": self.provider.config.audience_label,
                "operator": "In",
                "values": list(access.audience),
            }
            spec["ingress"] = [{"from": [{"namespaceSelector": {"matchExpressions": [audience]}}]}]
        return spec

    # -- one namespace ---------------------------------------------------------------
    def _converge(self, ns: str, model: str, desired: Access, ctx: ApplyContext) -> None:
        """One read-modify-write of the namespace's policy (no write when already there)."""
        name = POLICY_PREFIX + model
        policy = self._read(ns, name)
        if policy is None:
            if desired.posture is not Posture.OPEN:
                body = self._body(name, model, desired, ctx)
                self.provider.call(  # 409 AlreadyExists: someone created it first; read again
                    f"create networkpolicy {ns}/{name}",
                    lambda k: k.networking.create_namespaced_network_policy(ns, body, **k.raw),
                    fence=ctx.fence,
                )
            return
        self._check_ours(ns, policy)
        try:
            if self._access(ns, policy, model) == desired:
                return
        except PolicyEdited:
            pass  # rewritten below as killswitch would write it
        meta = policy["metadata"]
        if desired.posture is Posture.OPEN:
            # Preconditions: delete exactly the policy we read, as we read it.
            options = {
                "preconditions": {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]}
            }
            with suppress(NotFound):  # gone already: open
                self.provider.call(
                    f"delete networkpolicy {ns}/{name}",
                    lambda k: k.networking.delete_namespaced_network_policy(
                        name, ns, body=options, **k.raw
                    ),
                    fence=ctx.fence,
                )
            return
        body = self._body(name, model, desired, ctx)
        body["metadata"]["resourceVersion"] = meta["resourceVersion"]
        self.provider.call(
            f"update networkpolicy {ns}/{name}",
            lambda k: k.networking.replace_namespaced_network_policy(name, ns, body, **k.raw),
            fence=ctx.fence,
        )

    def _body(self, name: str, model: str, desired: Access, ctx: ApplyContext) -> Obj:
        annotations = {
            "killswitch.io/op": ctx.op_id,
            "killswitch.io/actor": ctx.actor,
            "killswitch.io/reason": ctx.reason,
        }
        if ctx.ticket:
            annotations["killswitch.io/ticket"] = ctx.ticket
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": name,
                "labels": {MANAGED_BY[0]: MANAGED_BY[1], "killswitch.io/model": model},
                "annotations": annotations,
            },
            "spec": self.spec(model, desired),
        }

    def _read(self, ns: str, name: str) -> Obj | None:
        try:
            return self.provider.call(
                f"get networkpolicy {ns}/{name}",
                lambda k: k.networking.read_namespaced_network_policy(name, ns, **k.raw),
            )
        except NotFound:
            return None

    def _check_ours(self, ns: str, policy: Obj) -> None:
        labels = policy["metadata"].get("labels") or {}
        if labels.get(MANAGED_BY[0]) != MANAGED_BY[1]:
            raise PermanentError(
                f"NetworkPolicy {ns}/{policy['metadata']['name']} in {self.provider.cluster} "
                f"was not created by killswitch (no label {MANAGED_BY[0]}={MANAGED_BY[1]}); "
                "killswitch will not take it over: rename or remove it"
            )

    def _access(self, ns: str, policy: Obj, model: str) -> Access:
        """The posture the policy expresses; PolicyEdited when it is not one killswitch wrote."""
        spec: Any = policy.get("spec") or {}
        rules = spec.get("ingress") or []
        access: Access | None = Access(Posture.REVOKED)
        if rules:
            try:
                values = rules[0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
                access = Access(Posture.RESTRICTED, tuple(str(v) for v in values))
            except (KeyError, IndexError, TypeError):
                access = None
        if access is None or spec != self.spec(model, access):
            raise PolicyEdited(
                f"NetworkPolicy {ns}/{policy['metadata']['name']} in {self.provider.cluster} "
                "no longer says what killswitch wrote (edited, or the model's selector changed)"
            )
        return access
