"""What a CourierGateway runs: the desired manifests of every object the operator owns.

Pure functions of the gateway and its spec, so the same input always gives the same objects
(what makes reconciliation idempotent) and tests can read them without an API server.

Every pod runs as a non-root user on a read-only root filesystem with all capabilities dropped;
``/tmp`` is a memory-backed emptyDir because Sanic and prometheus-client need a writable place.
``spec.<component>.pod`` adds scheduling (node selector, affinity, tolerations, topology spread,
priority class), pod labels and annotations, and pod security overrides that stay within the
restricted profile; without topology spread constraints of its own, a component's replicas are
spread over nodes and zones (best effort: ``ScheduleAnyway``, so a one-node cluster still runs).
Signing keys are mounted as whole Secret volumes (never ``subPath``), so the kubelet's updates
reach the running ingress, which re-reads key files every ``SECRETS_RELOAD_SECONDS``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import yaml

from courier_operator.gateway.spec import GatewaySpec, PodSpec, SecretKeyRef
from courier_operator.objects import MANAGED_BY, owner_reference

__all__ = [
    "API_PORT",
    "METRICS_PORT",
    "SOURCES_MOUNT",
    "configmap_name",
    "ingress_deployment",
    "pod_disruption_budget",
    "pod_security",
    "queue_env",
    "scheduling",
    "selector_labels",
    "service",
    "source_secret_name",
    "sources_configmap",
    "topology_spread",
    "worker_deployment",
]

API_PORT = 3000
METRICS_PORT = 9100
SOURCES_MOUNT = "/etc/courier-gateway/sources"
ADAPTERS_MOUNT = "/etc/courier-gateway/adapters"


def adapters_volume(
    spec: GatewaySpec,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None:
    """The custom adapters' ConfigMap as (volume, mount, ADAPTERS_DIR env), if there is one.

    Not owned by the gateway: the user's ConfigMap. Kubernetes updates its files in place, and
    the ingress re-reads ADAPTERS_DIR, so a changed adapter needs no restart.
    """
    if spec.adapters is None:
        return None
    return (
        {"name": "adapters", "configMap": {"name": spec.adapters.configMapName}},
        {"name": "adapters", "mountPath": ADAPTERS_MOUNT, "readOnly": True},
        {"name": "ADAPTERS_DIR", "value": ADAPTERS_MOUNT},
    )


_CONFIG_MOUNT = "/etc/courier-gateway/config"
_RUN_AS = 10001

POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": _RUN_AS,
    "runAsGroup": _RUN_AS,
    "fsGroup": _RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def selector_labels(gateway: dict[str, Any], component: str) -> dict[str, str]:
    """The labels that select one component's pods (never change: selectors are immutable)."""
    return {
        "app.kubernetes.io/name": "courier-gateway",
        "app.kubernetes.io/instance": gateway["metadata"]["name"],
        "app.kubernetes.io/component": component,
    }


def _labels(gateway: dict[str, Any], component: str) -> dict[str, str]:
    return {**selector_labels(gateway, component), "app.kubernetes.io/managed-by": MANAGED_BY}


def _metadata(gateway: dict[str, Any], name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": gateway["metadata"]["namespace"],
        "labels": _labels(gateway, component),
        "ownerReferences": [owner_reference(gateway)],
    }


def source_secret_name(gateway: dict[str, Any], source: str) -> str:
    """The Secret holding a source's keys: one entry per key, the entry's name is the key id."""
    return f"{gateway['metadata']['name']}-source-{source}"


def configmap_name(gateway: dict[str, Any]) -> str:
    """The ConfigMap holding the ingress's sources file."""
    return f"{gateway['metadata']['name']}-sources"


def sources_document(spec: GatewaySpec) -> str:
    """The ``SOURCES_FILE`` the ingress reads: every source with its key directory."""
    sources: dict[str, Any] = {}
    for source in spec.signing.sources:
        entry: dict[str, Any] = {"secretsDir": f"{SOURCES_MOUNT}/{source.name}"}
        if source.adapter is not None:
            entry["adapter"] = source.adapter
        else:
            entry["scheme"] = source.scheme
        if source.rateLimit is not None:
            entry["rateLimit"] = source.rateLimit.model_dump()
        sources[source.name] = entry
    return yaml.safe_dump({"sources": sources}, sort_keys=True)


def sources_configmap(gateway: dict[str, Any], spec: GatewaySpec) -> dict[str, Any]:
    """The ConfigMap with the sources file."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(gateway, configmap_name(gateway), "ingress"),
        "data": {"sources.yaml": sources_document(spec)},
    }


def _secret_env(name: str, ref: SecretKeyRef) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def _env(pairs: dict[str, object]) -> list[dict[str, Any]]:
    return [{"name": name, "value": str(value)} for name, value in pairs.items()]


def queue_env(spec: GatewaySpec) -> list[dict[str, Any]]:
    """Where the queue is and how it is laid out: the same for the ingress, the worker and
    replay Jobs (they must agree on the partitions, or events are written where none reads).

    ``REDIS_SENTINELS`` and ``REDIS_SENTINEL_MASTER`` only in sentinel mode; ``REDIS_URL`` from
    its Secret whenever one is named (in sentinel mode: credentials, database and TLS only).
    """
    redis = spec.redis
    pairs: dict[str, object] = {"REDIS_MODE": redis.mode}
    if redis.mode == "sentinel":
        pairs["REDIS_SENTINELS"] = ",".join(redis.sentinels)
        pairs["REDIS_SENTINEL_MASTER"] = redis.sentinelMaster
    pairs["QUEUE_STREAM"] = redis.stream
    pairs["QUEUE_PARTITIONS"] = redis.partitions
    pairs["ENQUEUE_MIN_REPLICAS"] = redis.minReplicas
    env = _env(pairs)
    if redis.urlSecretRef is not None:
        env.append(_secret_env("REDIS_URL", redis.urlSecretRef))
    return env


def _probe(path: str, port: str, *, period: int, failures: int) -> dict[str, Any]:
    # Every field spelled out: the API server would add the missing ones, and they would then
    # look like drift.
    return {
        "httpGet": {"path": path, "port": port, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "successThreshold": 1,
        "failureThreshold": failures,
    }


# Spread over nodes, then zones; per ReplicaSet (pod-template-hash), so a rollout's new pods
# spread among themselves rather than around the old ones.
_DEFAULT_SPREAD = ("kubernetes.io/hostname", "topology.kubernetes.io/zone")


def pod_security(settings: PodSpec) -> dict[str, Any]:
    """The pod securityContext: the restricted defaults with the spec's overrides."""
    overrides = settings.securityContext.model_dump(exclude_none=True)
    return {**POD_SECURITY, **overrides, "runAsNonRoot": True}


def topology_spread(
    gateway: dict[str, Any], component: str, settings: PodSpec
) -> list[dict[str, Any]]:
    """The spec's constraints (selecting the component's pods unless they say otherwise), or
    the default spread over nodes and zones."""
    selector = {"matchLabels": selector_labels(gateway, component)}
    if settings.topologySpreadConstraints is None:
        return [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": selector,
                "matchLabelKeys": ["pod-template-hash"],
            }
            for key in _DEFAULT_SPREAD
        ]
    return [
        {**item.model_dump(exclude_none=True), "labelSelector": item.labelSelector or selector}
        for item in settings.topologySpreadConstraints
    ]


def scheduling(settings: PodSpec) -> dict[str, Any]:
    """Node selector, affinity, tolerations and priority class from the spec (None: unset)."""
    return {
        "nodeSelector": settings.nodeSelector or None,
        "affinity": settings.affinity or None,
        "tolerations": settings.tolerations or None,
        "priorityClassName": settings.priorityClassName,
    }


def _pod_spec(
    gateway: dict[str, Any],
    spec: GatewaySpec,
    component: str,
    container: dict[str, Any],
    volumes: list[Any],
) -> dict[str, Any]:
    settings = spec.ingress.pod if component == "ingress" else spec.worker.pod
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": pod_security(settings),
        "containers": [container],
        "volumes": [
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            *volumes,
        ],
        "topologySpreadConstraints": topology_spread(gateway, component, settings),
        **scheduling(settings),
    }
    # None (not sent) when unset: a value removed from the spec leaves the pods too.
    pod["serviceAccountName"] = spec.serviceAccountName or None
    pod["imagePullSecrets"] = [{"name": item["name"]} for item in spec.imagePullSecrets] or None
    return pod


def _container(spec: GatewaySpec, role: str, resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": role,
        "image": spec.image,
        "imagePullPolicy": spec.imagePullPolicy,
        "args": [role],
        "securityContext": CONTAINER_SECURITY,
        "resources": resources,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - a private emptyDir
    }


def _deployment(
    gateway: dict[str, Any],
    spec: GatewaySpec,
    component: str,
    *,
    replicas: int,
    pod: dict[str, Any],
    annotations: dict[str, str],
    grace_seconds: int,
) -> dict[str, Any]:
    pod["terminationGracePeriodSeconds"] = grace_seconds
    settings = spec.ingress.pod if component == "ingress" else spec.worker.pod
    # The operator's labels and annotations win: the selector must keep matching.
    labels = {**settings.labels, **_labels(gateway, component)}
    annotations = {**settings.annotations, **annotations}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(gateway, f"{gateway['metadata']['name']}-{component}", component),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector_labels(gateway, component)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                # An empty map would be dropped by the API server and look like drift forever.
                "metadata": {"labels": labels, "annotations": annotations or None},
                "spec": pod,
            },
        },
    }


def ingress_deployment(gateway: dict[str, Any], spec: GatewaySpec) -> dict[str, Any]:
    """The ingress Deployment: HTTP on 3000, keys mounted per source."""
    container = _container(spec, "ingress", spec.ingress.resources.manifest())
    container["ports"] = [{"name": "http", "containerPort": API_PORT, "protocol": "TCP"}]
    container["env"] = [
        *_env(
            {
                "API_HOST": "0.0.0.0",  # noqa: S104 - a pod listens on its own address
                "API_PORT": API_PORT,
                "SOURCES_FILE": f"{_CONFIG_MOUNT}/sources.yaml",
                "SIGNATURE_TOLERANCE_SECONDS": spec.signing.toleranceSeconds,
                "MAX_BODY_BYTES": spec.ingress.maxBodyBytes,
                "INGRESS_WORKERS": spec.ingress.processes,
                "LOG_LEVEL": spec.logLevel,
                # Endpoints are removed asynchronously: keep serving a moment after SIGTERM.
                "SHUTDOWN_DELAY_SECONDS": 5,
                "PROMETHEUS_MULTIPROC_DIR": "/tmp/metrics",  # noqa: S108
            }
        ),
        *queue_env(spec),
    ]
    container["livenessProbe"] = _probe("/health", "http", period=10, failures=3)
    container["readinessProbe"] = _probe("/ready", "http", period=5, failures=2)
    mounts = container["volumeMounts"]
    mounts.append({"name": "sources-file", "mountPath": _CONFIG_MOUNT, "readOnly": True})
    volumes: list[Any] = [
        {"name": "sources-file", "configMap": {"name": configmap_name(gateway)}},
    ]
    custom = adapters_volume(spec)
    if custom is not None:
        volumes.append(custom[0])
        mounts.append(custom[1])
        container["env"].append(custom[2])
    for source in spec.signing.sources:
        volume = f"keys-{source.name}"
        mounts.append(
            {"name": volume, "mountPath": f"{SOURCES_MOUNT}/{source.name}", "readOnly": True}
        )
        volumes.append(
            {"name": volume, "secret": {"secretName": source_secret_name(gateway, source.name)}}
        )
    # The sources file is read at start-up only: a change rolls the pods. Keys are not in it.
    digest = hashlib.sha256(sources_document(spec).encode()).hexdigest()[:16]
    return _deployment(
        gateway,
        spec,
        "ingress",
        replicas=spec.ingress.replicas,
        pod=_pod_spec(gateway, spec, "ingress", container, volumes),
        annotations={"gateway.courier.dev/sources-digest": digest},
        grace_seconds=30,
    )


def worker_deployment(gateway: dict[str, Any], spec: GatewaySpec, replicas: int) -> dict[str, Any]:
    """The worker Deployment with ``replicas`` chosen by the scaler."""
    container = _container(spec, "worker", spec.worker.resources.manifest())
    container["ports"] = [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}]
    settings: dict[str, object] = {
        "WORKER_CONCURRENCY": spec.worker.concurrency,
        "WORKER_METRICS_PORT": METRICS_PORT,
        "MONGO_DB": spec.mongo.database,
        "RETRY_MAX_ATTEMPTS": spec.retry.maxAttempts,
        "RETRY_BASE_DELAY_MS": spec.retry.baseDelayMs,
        "RETRY_MAX_DELAY_MS": spec.retry.maxDelayMs,
        "RETRY_JITTER": spec.retry.jitter,
        "DOWNSTREAM_TIMEOUT_MS": spec.downstream.timeoutMs,
        "LOG_LEVEL": spec.logLevel,
    }
    if spec.downstream.url:
        settings["DOWNSTREAM_URL"] = spec.downstream.url
    env = [
        *_env(settings),
        *queue_env(spec),
        _secret_env("MONGO_URI", spec.mongo.uriSecretRef),
        {
            "name": "WORKER_ID",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
        },
    ]
    if spec.downstream.signingSecretRef is not None:
        env.append(_secret_env("DOWNSTREAM_SIGNING_SECRET", spec.downstream.signingSecretRef))
    container["env"] = env
    container["livenessProbe"] = _probe("/health", "metrics", period=10, failures=3)
    container["readinessProbe"] = _probe("/ready", "metrics", period=5, failures=2)
    return _deployment(
        gateway,
        spec,
        "worker",
        replicas=replicas,
        pod=_pod_spec(gateway, spec, "worker", container, []),
        annotations={},
        # The worker finishes what it holds (WORKER_DRAIN_TIMEOUT_MS, 30 s) before it exits.
        grace_seconds=45,
    )


def service(gateway: dict[str, Any], spec: GatewaySpec) -> dict[str, Any]:
    """The Service in front of the ingress, named after the gateway."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(gateway, gateway["metadata"]["name"], "ingress"),
        "spec": {
            "type": spec.ingress.serviceType,
            "selector": selector_labels(gateway, "ingress"),
            "ports": [{"name": "http", "port": API_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def pod_disruption_budget(gateway: dict[str, Any], component: str) -> dict[str, Any]:
    """At most one pod of a component evicted at a time (a node drain never takes all)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(gateway, f"{gateway['metadata']['name']}-{component}", component),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(gateway, component)},
        },
    }
