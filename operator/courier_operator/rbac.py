"""The Kubernetes permissions the operator needs: its own calls and kopf's.

This is the one list the Helm chart's ClusterRole (or Roles) must equal. Tests hold it to both
sides: every request the operator makes against the emulated API is covered by it, every
:class:`~courier_operator.kube.KubeClient` call in the code is covered by it, and the chart
renders exactly these rules. A server-side apply is a PATCH whether it creates or updates, so
the operator needs "patch" and never "create" on what it owns.

kopf's share: it lists, watches and patches (annotations, finalizers) the resources it handles,
posts Events, and with peering lists, watches and patches the peering object. Scanning is off,
so it needs no access to CustomResourceDefinitions, nor to namespaces (it watches the ones
``OPERATOR_NAMESPACES`` names, or all at once).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CLEANUP_PERMISSIONS", "PERMISSIONS", "Rule", "allows"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One RBAC policy rule."""

    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]

    def as_manifest(self) -> dict[str, list[str]]:
        """The rule as it appears in a Role or ClusterRole."""
        return {
            "apiGroups": [self.api_group],
            "resources": list(self.resources),
            "verbs": list(self.verbs),
        }


PERMISSIONS: tuple[Rule, ...] = (
    Rule(
        "gateway.courier.dev",
        ("couriergateways", "replayrequests"),
        ("get", "list", "watch", "patch"),
    ),
    Rule("gateway.courier.dev", ("couriergateways/status", "replayrequests/status"), ("patch",)),
    Rule("kopf.dev", ("kopfpeerings", "clusterkopfpeerings"), ("get", "list", "watch", "patch")),
    # Owned objects are written by server-side apply, a PATCH that also creates: no "create".
    Rule("apps", ("deployments",), ("get", "list", "watch", "patch")),
    Rule("", ("services", "configmaps", "secrets"), ("get", "patch")),
    Rule("policy", ("poddisruptionbudgets",), ("get", "patch")),
    Rule("batch", ("jobs",), ("get", "list", "watch", "patch", "delete")),
    Rule("", ("events",), ("create",)),
)


# ``courier-gateway cleanup`` (the chart's pre-delete hook), under its own service account, in
# the release namespace only: it deletes the chart's own gateway and waits for it to go.
CLEANUP_PERMISSIONS: tuple[Rule, ...] = (
    Rule("gateway.courier.dev", ("couriergateways",), ("get", "delete")),
)


def allows(api_group: str, resource: str, verb: str) -> bool:
    """Whether :data:`PERMISSIONS` grant ``verb`` on ``resource`` (``plural[/subresource]``)."""
    return any(
        rule.api_group == api_group and resource in rule.resources and verb in rule.verbs
        for rule in PERMISSIONS
    )
