"""The deployment files, checked as far as possible without a Docker engine or a cluster:
they parse, the embedded sidecar config is valid, and the pieces point at each other
(ports, names, paths, scrape annotations)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from sidecar.config import SidecarConfig, parse_config
from tests.support.procs import require_binary

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
POD_NAME = "checkout-5d8f9c7b4-x2x9q"


def _documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _objects() -> dict[tuple[str, str], dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    objects = {}
    for resource in kustomization["resources"]:
        for doc in _documents(resource):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


@pytest.fixture(scope="module")
def objects() -> dict[tuple[str, str], dict[str, Any]]:
    return _objects()


@pytest.fixture(scope="module")
def sidecar_config(objects: dict[tuple[str, str], dict[str, Any]]) -> SidecarConfig:
    config_map = objects[("ConfigMap", "checkout-sidecar")]
    return parse_config(config_map["data"]["sidecar.yaml"], "ConfigMap checkout-sidecar",
                        env={"POD_NAME": POD_NAME})


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def _pod(objects: dict[tuple[str, str], dict[str, Any]], name: str) -> dict[str, Any]:
    pod: dict[str, Any] = objects[("Deployment", name)]["spec"]["template"]
    return pod


def test_kustomization_lists_every_manifest_in_the_folder() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert manifests, f"no manifest in {K8S}"
    assert set(kustomization["resources"]) == manifests


def test_the_configmap_holds_a_valid_sidecar_config(sidecar_config: SidecarConfig) -> None:
    assert sidecar_config.service == "checkout"
    assert sidecar_config.instance == POD_NAME   # ${POD_NAME} from the downward API
    assert sidecar_config.eventlog is not None


def test_the_app_pod_runs_the_sidecar_as_a_native_sidecar_container(
        objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    spec = _pod(objects, "checkout")["spec"]
    (sidecar,) = spec["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["args"][:2] == ["proxy", "--config"]
    config_path = Path(sidecar["args"][2])
    mount = next(m for m in sidecar["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert ("ConfigMap", volume["configMap"]["name"]) in objects
    assert config_path.name in objects[("ConfigMap", volume["configMap"]["name"])]["data"]
    env = {e["name"]: e for e in sidecar["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert [c["name"] for c in spec["containers"]] == ["app"]


def test_the_sidecar_container_exposes_and_probes_what_its_config_listens_on(
        objects: dict[tuple[str, str], dict[str, Any]], sidecar_config: SidecarConfig) -> None:
    pod = _pod(objects, "checkout")
    (sidecar,) = pod["spec"]["initContainers"]
    ports = {p["containerPort"] for p in sidecar["ports"]}
    assert ports == {_port(sidecar_config.listen), _port(sidecar_config.metrics_listen)}
    # the admin API stays on loopback without admin_tls (docs/deployment.md), so the probes run
    # `sidecar health` inside the container instead of the kubelet's (plaintext) grpc probes
    assert sidecar_config.admin_listen.startswith("127.") and sidecar_config.admin_tls is None
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = sidecar[probe]["exec"]["command"]
        assert command[:2] == ["sidecar", "health"]
        assert command[command.index("--addr") + 1] == sidecar_config.admin_listen
    # scrapes come from Prometheus: not on loopback
    assert not sidecar_config.metrics_listen.startswith("127.")
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == _port(sidecar_config.metrics_listen)
    outbox_dir = str(Path(sidecar_config.eventlog.outbox_path).parent)  # type: ignore[union-attr]
    assert outbox_dir in {m["mountPath"] for m in sidecar["volumeMounts"]}


def test_the_app_sends_its_outbound_calls_to_the_sidecar(
        objects: dict[tuple[str, str], dict[str, Any]], sidecar_config: SidecarConfig) -> None:
    (app,) = _pod(objects, "checkout")["spec"]["containers"]
    targets = {e["value"] for e in app["env"] if e["name"].endswith("_ADDR")}
    assert targets == {sidecar_config.listen}
    assert sidecar_config.listen.startswith("127.0.0.1:")  # only the pod can reach it


def test_the_sidecar_reaches_the_event_log_through_its_service(
        objects: dict[tuple[str, str], dict[str, Any]], sidecar_config: SidecarConfig) -> None:
    assert sidecar_config.eventlog is not None
    host, _, port = sidecar_config.eventlog.address.rpartition(":")
    service = objects[("Service", host.split(".")[0])]
    grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert grpc_port["port"] == int(port)
    pod = _pod(objects, "eventlog")
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    args = container["args"]
    assert args[:2] == ["eventlog", "serve"]
    assert args[args.index("--store") + 1].startswith("sqlite:////var/lib/eventlog/")
    listen_port = _port(args[args.index("--listen") + 1])
    metrics_port = _port(args[args.index("--metrics-listen") + 1])
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert named == {"grpc": listen_port, "metrics": metrics_port}
    assert container["readinessProbe"]["grpc"]["port"] == listen_port
    annotations = pod["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == metrics_port
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "eventlog"
    assert objects[("Deployment", "eventlog")]["spec"]["strategy"]["type"] == "Recreate"


def test_every_container_runs_as_a_non_root_user_without_privileges_on_a_read_only_root(
        objects: dict[tuple[str, str], dict[str, Any]]) -> None:
    for name in ("checkout", "eventlog"):
        spec = _pod(objects, name)["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        for container in spec.get("initContainers", []) + spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            if container["image"] == "evergreen-sidecar":  # ours: writes only to its volumes
                assert container["securityContext"]["readOnlyRootFilesystem"] is True
                mounts = {m["mountPath"] for m in container["volumeMounts"]}
                assert "/tmp" in mounts  # SQLite's temp files


# --- Dockerfile -------------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_dockerfile_builds_in_one_stage_and_runs_from_a_slim_one_as_non_root() -> None:
    instructions = _instructions()
    stages = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert len(stages) >= 2, "multi-stage: build, then runtime"
    args = dict(rest.split("=", 1) for keyword, rest in instructions
                if keyword == "ARG" and "=" in rest)
    final_image = stages[-1].split()[0]
    final_image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], final_image)
    assert final_image.startswith("python:") and "-slim" in final_image
    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM"):]
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert any(k == "COPY" and rest.startswith("--from=") for k, rest in final)


def test_dockerfile_health_check_uses_grpc_health_and_the_entrypoint_is_sidecar() -> None:
    instructions = dict(_instructions())  # the last of each keyword is the effective one
    healthcheck = instructions["HEALTHCHECK"]
    assert 'CMD ["sidecar", "health"' in healthcheck
    assert instructions["ENTRYPOINT"] == '["sidecar"]'
    assert instructions["CMD"].startswith('["proxy", "--config"')


def test_dockerfile_copies_only_files_that_exist() -> None:
    for keyword, rest in _instructions():
        if keyword == "COPY" and not rest.startswith("--from="):
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source


def test_dockerfile_passes_hadolint() -> None:
    hadolint = require_binary("hadolint")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
