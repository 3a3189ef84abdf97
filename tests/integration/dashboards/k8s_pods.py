"""Pods of the deploy/k8s example, as Kubernetes discovery would show them to Prometheus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support.prometheus import FakePod

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"


def pod_template(deployment: str) -> dict[str, Any]:
    """The pod template of one Deployment in deploy/k8s/."""
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Deployment" and doc["metadata"]["name"] == deployment:
                template: dict[str, Any] = doc["spec"]["template"]
                return template
    raise LookupError(f"no Deployment {deployment!r} in {K8S}")


def fake_pod(deployment: str, pod_name: str, host: str = "127.0.0.1",
             annotations: dict[str, str] | None = None) -> FakePod:
    """A pod of ``deployment`` at ``host``; ``annotations`` override the template's (tests
    point prometheus.io/port at the free port their process listens on)."""
    metadata = pod_template(deployment)["metadata"]
    return FakePod(address=host, name=pod_name, labels=dict(metadata.get("labels", {})),
                   annotations={**metadata.get("annotations", {}), **(annotations or {})})
