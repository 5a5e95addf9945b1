"""deploy/: the compose file through docker-compose's own validation, the Kubernetes manifests against the
Kubernetes schemas (kubernetes-validate), the systemd unit through systemd-analyze, and the pipeline file they
share run for real as an input host and a worker host on one Redis, as the compose file runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from framefarm.bus.base import NAMESPACE
from framefarm.cli import load
from framefarm.config.urls import redact_url

from conftest import MEDIA, MODEL
from peers import wait_for
from workspace import Workspace

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.33.0"
NOT_KUBERNETES = {"ScaledObject", "Kustomization"}  # KEDA's and kustomize's kinds: checked by hand below
TOKEN = "deploy-test-token"


def compose_config(compose: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker-compose", "-f", str(compose), "config"],
        capture_output=True, text=True, env={**os.environ, **env}, timeout=60,
    )  # fmt: skip


def test_the_compose_file_is_valid_and_runs_an_input_host_and_scalable_workers_on_one_broker(tmp_path: Path) -> None:
    result = compose_config(DEPLOY / "compose.yaml", FRAMEFARM_TOKEN=TOKEN)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"redis", "inputs", "workers"}
    assert services["inputs"]["command"][-2:] == ["--role", "inputs"]
    assert services["workers"]["command"][-2:] == ["--role", "workers"]
    assert services["workers"]["deploy"]["replicas"] >= 2
    for name in ("inputs", "workers"):
        service = services[name]
        assert service["environment"]["FRAMEFARM_BROKER"] == "redis://redis:6379/0"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert any(v.endswith(":/etc/framefarm/pipeline.yaml:ro") for v in service["volumes"])
    assert services["inputs"]["ports"] == ["127.0.0.1:8080:8080/tcp"]  # the status page on the host only
    unset = compose_config(DEPLOY / "compose.yaml", FRAMEFARM_TOKEN="")
    assert unset.returncode != 0 and "set FRAMEFARM_TOKEN" in unset.stderr
    broken = tmp_path / "compose.yaml"  # the validation is docker-compose's schema, not a YAML parse
    broken.write_text((DEPLOY / "compose.yaml").read_text().replace("stop_grace_period:", "stop_grace_periode:"))
    (tmp_path / "pipeline.yaml").write_text("")
    assert compose_config(broken, FRAMEFARM_TOKEN=TOKEN).returncode != 0


def manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted(KUBERNETES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in manifests() if doc["kind"] == kind]


def test_the_kubernetes_manifests_follow_the_kubernetes_schemas() -> None:
    checked = 0
    for doc in manifests():
        if doc["kind"] not in NOT_KUBERNETES:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises on any mistake
            checked += 1
    assert checked == 9  # namespace, configmap, volume claim, secret, redis (2), inputs (2), workers
    bad = by_kind("Deployment")[0]
    bad["spec"]["template"]["spec"]["containers"][0]["argz"] = bad["spec"]["template"]["spec"]["containers"][0]["args"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES_VERSION, strict=True)
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def deployed_pipeline(tmp_path: Path) -> Path:
    """The ConfigMap's pipeline file, its volumes' paths mapped to folders here."""
    text = by_kind("ConfigMap")[0]["data"]["pipeline.yaml"]
    (tmp_path / "data" / "inbox").mkdir(parents=True)
    text = text.replace("/data/", f"{tmp_path / 'data'}/").replace("/var/lib/framefarm", str(tmp_path / "state"))
    path = tmp_path / "pipeline.yaml"
    path.write_text(text.replace("/opt/framefarm/models/", f"{MODEL.parent}/"))
    return path


def test_workers_scale_on_the_detector_queue_of_the_deployed_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KEDA's ScaledObject (a CRD, outside the Kubernetes schemas): it scales the worker Deployment, on the Redis
    list Dramatiq keeps for the pipeline's first processor, at the broker the pipeline names."""
    monkeypatch.setenv("FRAMEFARM_TOKEN", TOKEN)
    pipeline = load(deployed_pipeline(tmp_path))
    scaled = by_kind("ScaledObject")[0]
    workers = by_kind("Deployment")[0]
    assert scaled["spec"]["scaleTargetRef"]["name"] == workers["metadata"]["name"]
    trigger = scaled["spec"]["triggers"][0]
    first = next(m for m in pipeline.modules if m.section == "processors")
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == f"{NAMESPACE}:{first.alias}"
    assert f"redis://{trigger['metadata']['address']}/0" == redact_url(pipeline.service.broker)
    service = next(s for s in by_kind("Service") if s["metadata"]["name"] == "redis")
    assert (
        trigger["metadata"]["address"]
        == f"{service['metadata']['name']}.framefarm.svc:{service['spec']['ports'][0]['port']}"
    )
    for kind, role in (("Deployment", "workers"), ("StatefulSet", "inputs")):
        pod = next(d for d in by_kind(kind) if d["metadata"]["name"] == f"framefarm-{role}")["spec"]["template"]
        container = pod["spec"]["containers"][0]
        assert container["args"][-2:] == ["--role", role]
        assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "framefarm-web"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # answers without the token


def test_the_deployed_pipelines_pass_the_config_test(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "FRAMEFARM_TOKEN": TOKEN,
        "FRAMEFARM_DATA": str(tmp_path),
        "FRAMEFARM_MODELS": str(MODEL.parent),
    }
    (tmp_path / "inbox").mkdir()
    for config in (DEPLOY / "pipeline.yaml", deployed_pipeline(tmp_path / "k8s")):
        result = subprocess.run(
            [sys.executable, "-m", "framefarm.cli", "-t", "-c", str(config)], capture_output=True, text=True, env=env
        )
        assert result.returncode == 0, result.stderr
        assert TOKEN not in result.stdout + result.stderr


def test_the_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "framefarm.service").read_text()
    assert "ExecStart=/opt/framefarm/venv/bin/pipectl start --foreground" in unit
    assert "ExecReload=/opt/framefarm/venv/bin/pipectl -s reload" in unit
    here = unit.replace("/opt/framefarm/venv/bin/pipectl", str(Path(sys.executable).parent / "pipectl"))
    for name, text, clean in (("good", here, True), ("bad", here.replace("ExecReload", "ExecRelaod"), False)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "framefarm.service").write_text(text)
        verify = subprocess.run(
            ["systemd-analyze", "verify", str(tmp_path / name / "framefarm.service")],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (verify.returncode == 0 and not verify.stderr.strip()) is clean, verify.stderr


def test_the_compose_pipeline_runs_as_an_input_host_and_a_worker_host(tmp_path: Path, redis_url: str) -> None:
    """What `docker compose up` runs, without the containers: the same pipeline file twice, one runtime dir each,
    `--role inputs` and `--role workers`, on one Redis and one data folder."""
    data = tmp_path / "data"
    (data / "inbox").mkdir(parents=True)
    env = {"FRAMEFARM_BROKER": redis_url, "FRAMEFARM_TOKEN": TOKEN, "FRAMEFARM_DATA": str(data),
           "FRAMEFARM_MODELS": str(MODEL.parent), "FRAMEFARM_HTTP_LISTEN": "127.0.0.1:0"}  # fmt: skip
    hosts = {role: Workspace(tmp_path / role, redis_url) for role in ("inputs", "workers")}
    try:
        for role, host in hosts.items():
            host.root.mkdir()
            started = subprocess.run(
                [sys.executable, "-m", "framefarm.cli", "start", "--role", role, "-c", str(DEPLOY / "pipeline.yaml")],
                capture_output=True, text=True, timeout=120,
                env={**os.environ, **env, "FRAMEFARM_RUNTIME": str(host.root / "run")},
            )  # fmt: skip
            assert started.returncode == 0, started.stderr
        shutil.copyfile(MEDIA / "dog.jpg", data / ".dog.jpg")
        os.replace(data / ".dog.jpg", data / "inbox" / "dog.jpg")
        result = data / "results" / "photos" / "dog.json"
        wait_for(result.exists, 120, "the worker host's result")
        assert (data / "inbox" / ".done" / "dog.jpg").exists()
        logs = {role: (host.root / "run" / "logs").iterdir() for role, host in hosts.items()}
        assert {p.name for p in logs["inputs"]} >= {"photos.log"}
        assert {p.name for p in logs["workers"]} >= {"detector.log", "results.log"}
    finally:
        for host in hosts.values():
            host.force_stop()
