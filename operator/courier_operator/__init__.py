"""The Courier Gateway operator: CourierGateway and ReplayRequest custom resources, with kopf.

- :mod:`~courier_operator.gateway`: what a CourierGateway runs (workloads), its signing keys
  and their rotation (keys), worker scaling on queue lag (scaling), and the reconciliation that
  ties them together and writes the status (reconcile);
- :mod:`~courier_operator.replay`: the Job behind a ReplayRequest and how it is followed;
- :mod:`~courier_operator.kube`: the API client (lightkube, server-side apply) and the resources
  it touches (the RBAC); :mod:`~courier_operator.fields`: the fields an apply owns;
  :mod:`~courier_operator.login`: credentials (service account, kubeconfig, exec plugins);
- :mod:`~courier_operator.handlers` and :mod:`~courier_operator.runner`: kopf wiring.

Run it as ``courier-gateway operator``.
"""

from courier_operator.handlers import OperatorState, build_registry
from courier_operator.runner import run_operator

__all__ = ["OperatorState", "build_registry", "run_operator"]
