"""The Kubernetes manifests of ``deploy/``, checked offline (they were never applied to a
cluster here): the core kinds against the Kubernetes OpenAPI schemas
(``kubernetes-validate``), the KEDA objects by structure, every command line against the
real CLI, and the Redis list names of the autoscaler against the lists that Celery really
writes for each queue and priority.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from test_docker import resolve

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30"  # the oldest release still maintained when these were written
CORE_KINDS = {"Namespace", "ConfigMap", "Secret", "Service", "Job", "Deployment"}


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["_file"] = path.name
                docs.append(doc)
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == kind}


def containers() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in documents():
        if d["kind"] in ("Deployment", "Job"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                out.append((d["metadata"]["name"], c))
    return out


def test_every_file_is_in_the_kustomization_and_in_the_gradq_namespace() -> None:
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    files = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files
    for d in documents():
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == kust["namespace"] == "gradq", d["_file"]
    kinds = {d["kind"] for d in documents()}
    assert kinds == CORE_KINDS | {"ScaledObject"}


def test_the_core_kinds_validate_against_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    for d in documents():
        if d["kind"] in CORE_KINDS:
            doc = {k: v for k, v in d.items() if k != "_file"}
            kv.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError


def test_the_validator_refuses_a_broken_manifest() -> None:
    """The check above can fail: a misspelt field or a wrong type is refused."""
    kv = pytest.importorskip("kubernetes_validate")
    gpu = {k: v for k, v in by_kind("Deployment")["gradq-worker-gpu"].items() if k != "_file"}
    bad = yaml.safe_load(yaml.safe_dump(gpu))
    bad["spec"]["replica"] = 2
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)
    bad = yaml.safe_load(yaml.safe_dump(gpu))
    bad["spec"]["template"]["spec"]["containers"][0]["args"] = "worker --gpus all"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)


def test_every_command_is_a_real_gradq_command() -> None:
    # the image's entrypoint is `gradq` (Dockerfile): a container's args are a gradq command
    lines = {name: c["args"] for name, c in containers()}
    assert all("command" not in c for _, c in containers())
    assert set(lines) == {"gradq-migrate", "gradq-worker-gpu", "gradq-worker-cpu",
                          "gradq-dashboard"}
    for args in lines.values():
        resolve(args)  # raises click.UsageError for anything gradq would refuse
    assert lines["gradq-migrate"][:2] == ["db", "upgrade"]
    assert resolve(lines["gradq-worker-gpu"]).name == "worker"
    assert "--gpus" in lines["gradq-worker-gpu"]
    assert "--cpu" in lines["gradq-worker-cpu"]
    assert resolve(lines["gradq-dashboard"]).name == "ui"


def test_workers_get_gpus_and_every_container_the_service_urls() -> None:
    deps = by_kind("Deployment")
    [gpu] = deps["gradq-worker-gpu"]["spec"]["template"]["spec"]["containers"]
    assert int(gpu["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert gpu["image"].endswith(":gpu")
    [cpu] = deps["gradq-worker-cpu"]["spec"]["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in cpu["resources"].get("limits", {})
    [secret] = by_kind("Secret").values()
    [config] = by_kind("ConfigMap").values()
    assert {"GRADQ_DATABASE_URL", "GRADQ_BROKER_URL"} <= set(secret["stringData"])
    assert secret["stringData"]["GRADQ_DATABASE_URL"].startswith("postgresql+psycopg://")
    for name, c in containers():
        refs = {(k, v["name"]) for e in c["envFrom"] for k, v in e.items()}
        assert refs == {("configMapRef", config["metadata"]["name"]),
                        ("secretRef", secret["metadata"]["name"])}, name
    # Redis and PostgreSQL are external: named by ExternalName services, never run here
    services = by_kind("Service")
    assert {n for n, s in services.items() if s["spec"]["type"] == "ExternalName"} == \
        {"redis", "postgres"}
    assert not {"redis", "postgres"} & set(deps)


def test_the_dashboard_is_for_in_cluster_use() -> None:
    svc = by_kind("Service")["gradq-dashboard"]
    assert svc["spec"]["type"] == "ClusterIP"
    [ui] = by_kind("Deployment")["gradq-dashboard"]["spec"]["template"]["spec"]["containers"]
    args = ui["args"]
    assert args[args.index("--host") + 1] == "0.0.0.0"
    port = int(args[args.index("--port") + 1])
    assert ui["ports"][0]["containerPort"] == port == svc["spec"]["ports"][0]["port"]
    allowed = {args[i + 1] for i, a in enumerate(args) if a == "--allow-host"}
    assert {"gradq-dashboard", "gradq-dashboard.gradq.svc"} <= allowed
    # the dashboard refuses unknown Host headers, so a probe must not be an HTTP GET
    assert "httpGet" not in ui["readinessProbe"] and "httpGet" not in ui["livenessProbe"]


def expected_lists(queues: list[str]) -> set[str]:
    from gradq.service.celery_app import MAX_PRIORITY, PRIORITY_SEP

    return {q if p == 0 else f"{q}{PRIORITY_SEP}{p}" for q in queues
            for p in range(MAX_PRIORITY + 1)}


SCALED = {"gradq-worker-gpu": ["gpu", "auto"], "gradq-worker-cpu": ["cpu"]}


def test_keda_scales_each_worker_kind_on_every_priority_list_of_its_queues() -> None:
    objects = by_kind("ScaledObject")
    assert set(objects) == set(SCALED)
    deps = by_kind("Deployment")
    [config] = by_kind("ConfigMap").values()
    [secret] = by_kind("Secret").values()
    for name, queues in SCALED.items():
        so = objects[name]
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        target = so["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment" and target["name"] in deps
        assert 0 <= so["spec"]["minReplicaCount"] < so["spec"]["maxReplicaCount"]
        triggers = so["spec"]["triggers"]
        assert {t["type"] for t in triggers} == {"redis"}
        lists = [t["metadata"]["listName"] for t in triggers]
        assert len(lists) == len(set(lists))
        assert set(lists) == expected_lists(queues), name
        for t in triggers:
            m = t["metadata"]
            assert int(m["listLength"]) >= 1 and m["databaseIndex"] == "0"
            # read from the scaled deployment's environment: config.yaml must hold them
            assert m["addressFromEnv"] in config["data"]
            assert ":" in config["data"][m["addressFromEnv"]]
            assert m["passwordFromEnv"] in secret["stringData"]
        # the formula sums every trigger, each once
        mod = so["spec"]["advanced"]["scalingModifiers"]
        assert sorted(x.strip() for x in mod["formula"].split("+")) == \
            sorted(t["name"] for t in triggers)
        assert float(mod["target"]) > 0 and mod["metricType"] == "AverageValue"
    # the broker URL's database is the one the triggers read
    assert secret["stringData"]["GRADQ_BROKER_URL"].rsplit("/", 1)[1] == "0"


def test_the_list_names_are_the_ones_celery_writes(redis_url: str) -> None:
    """Publish a job message at every user priority to every queue on the real Redis and
    read back which lists hold them: each is one the autoscaler watches, for its queue."""
    import redis
    from gradq.service.celery_app import QUEUES, send_job

    client = redis.Redis.from_url(redis_url)
    watched = {q: expected_lists([q]) for q in QUEUES}
    so_lists = {t["metadata"]["listName"] for so in by_kind("ScaledObject").values()
                for t in so["spec"]["triggers"]}
    seen = set()
    for q in QUEUES:
        for user_priority in range(10):
            client.flushdb()
            send_job("0" * 32, q, user_priority)
            lists = {k.decode() for k in client.keys("*") if client.type(k) == b"list"}
            assert len(lists) == 1, lists
            assert lists <= watched[q] and lists <= so_lists, (q, user_priority, lists)
            seen |= lists
            if user_priority == 0:  # a default submit waits in "Q:9", Celery's lowest
                assert lists == {f"{q}:9"}
    assert seen == so_lists  # each of the ten priorities has a list of its own, all watched
