"""Logging in: the service account in a pod, else the kubeconfig, exec plugins included.

lightkube reads the configuration (``KubeConfig.from_env``: the pod's service account when there
is one, else ``KUBECONFIG`` or ``~/.kube/config``); this module turns it into the credentials kopf
and the operator's client share. An exec plugin (``aws eks get-token``,
``gke-gcloud-auth-plugin``, ``kubelogin``…) is run here, and its token's expiry handed to kopf:
kopf logs in again when it passes (or when the API answers 401), and the operator's client
follows (``OperatorState.start``). A service account's token file is re-read at every login, and
logins are repeated every few minutes because the kubelet renews the file in place.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
from lightkube import KubeConfig
from lightkube.config.kubeconfig import SingleConfig
from lightkube.config.models import UserExec

__all__ = ["TOKEN_FILE_LIFETIME", "connection_info", "login"]

# How long credentials read from a token file are used before the file is read again.
TOKEN_FILE_LIFETIME = timedelta(minutes=5)
_EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")


class LoginError(kopf.LoginError):
    """No usable credentials; the message names what is wrong."""


async def _run_exec(plugin: UserExec, server: str) -> dict[str, Any]:
    """Run a kubeconfig exec plugin; its ``ExecCredential.status``."""
    if plugin.apiVersion not in (*_EXEC_API_VERSIONS, "client.authentication.k8s.io/v1alpha1"):
        raise LoginError(f"kubeconfig exec plugin apiVersion {plugin.apiVersion} is not supported")
    env = dict(os.environ)
    env.update({item.name: item.value for item in plugin.env or []})
    # What client-go passes: the plugin may need the cluster it authenticates to.
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {
            "apiVersion": plugin.apiVersion,
            "kind": "ExecCredential",
            "spec": {"interactive": False, "cluster": {"server": server}},
        }
    )
    try:
        process = await asyncio.create_subprocess_exec(
            plugin.command,
            *(plugin.args or []),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as error:
        hint = f" ({plugin.installHint.strip()})" if plugin.installHint else ""
        raise LoginError(f"kubeconfig exec plugin {plugin.command}: {error}{hint}") from None
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise LoginError(
            f"kubeconfig exec plugin {plugin.command} exited {process.returncode}:"
            f" {stderr.decode(errors='replace').strip()[:300]}"
        )
    try:
        status: dict[str, Any] = json.loads(stdout)["status"]
    except (ValueError, KeyError, TypeError):
        raise LoginError(
            f"kubeconfig exec plugin {plugin.command} printed no ExecCredential"
        ) from None
    return status


def _expiry(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


async def connection_info(config: SingleConfig) -> kopf.ConnectionInfo:
    """kopf's credentials for one kubeconfig context (running its exec plugin, if any)."""
    cluster, user = config.cluster, config.user
    token: str | None = None
    certificate: str | None = None
    key: str | None = None
    expiration: datetime | None = None
    if user is not None:
        token = user.token
        if user.token_file:
            # A small local file, read once per login: not worth a thread.
            token = Path(str(config.abs_file(user.token_file))).read_text().strip()  # noqa: ASYNC240
            expiration = datetime.now(UTC) + TOKEN_FILE_LIFETIME
        elif user.exec is not None:
            status = await _run_exec(user.exec, cluster.server)
            token = status.get("token")
            if status.get("clientCertificateData") and status.get("clientKeyData"):
                certificate = base64.b64encode(status["clientCertificateData"].encode()).decode()
                key = base64.b64encode(status["clientKeyData"].encode()).decode()
            expiration = _expiry(status.get("expirationTimestamp"))
        elif user.auth_provider:
            raise LoginError("kubeconfig auth-provider is not supported: use an exec plugin")
    ca_path = str(config.abs_file(cluster.certificate_auth)) if cluster.certificate_auth else None
    return kopf.ConnectionInfo(
        server=cluster.server,
        ca_path=ca_path,
        ca_data=cluster.certificate_auth_data,
        insecure=cluster.insecure or None,
        username=user.username if user else None,
        password=user.password if user else None,
        token=token,
        certificate_path=str(config.abs_file(user.client_cert))
        if user and user.client_cert
        else None,
        private_key_path=str(config.abs_file(user.client_key))
        if user and user.client_key
        else None,
        certificate_data=certificate or (user.client_cert_data if user else None),
        private_key_data=key or (user.client_key_data if user else None),
        default_namespace=config.namespace,
        expiration=expiration,
    )


async def login(**_: Any) -> kopf.ConnectionInfo:
    """kopf's login handler: the in-cluster service account, else the current kubeconfig context."""
    try:
        config = KubeConfig.from_env().get()
    except Exception as error:  # lightkube raises its own ConfigError, or OSError for files
        raise LoginError(f"no Kubernetes credentials: {error}") from None
    if config is None:
        raise LoginError("no Kubernetes credentials: the kubeconfig has no current context")
    return await connection_info(config)
