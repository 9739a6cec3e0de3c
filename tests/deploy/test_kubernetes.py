"""The Kubernetes base (deploy/kubernetes) is valid, complete and says what the server
and banditctl actually accept.

Schemas: every object is validated, in strict mode (unknown fields are errors, so a
misspelt ``readinesProbe`` fails), against the oldest Kubernetes the base is written for
(1.30: the native gRPC probe is GA since 1.27, the ``sleep`` preStop handler is on by
default since 1.30) and against the newest schemas kubernetes-validate bundles.

Semantics: the flags and environment variables the manifests pass are parsed by the real
click commands (``banditd serve``, ``banditctl migrate``, ``banditctl scheduler``), so a
renamed flag or variable fails here rather than in a crash-looping pod.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from unittest import mock

import click
import kubernetes_validate
import pytest
import yaml

from banditd.admin_cli.commands_ops import scheduler_command
from banditd.admin_cli.main import main as banditctl
from banditd.admin_cli.main import migrate_command
from banditd.server.app import SERVICE_NAME
from banditd.server.main import serve_command
from tests.deploy import dockerfile
from tests.deploy.manifests import (
    BASE,
    IMAGE,
    base_secret_values,
    container,
    container_env,
    cpu_cores,
    documents,
    find,
    kustomization,
    pod_template,
    resources,
    selects,
)

OLDEST_KUBERNETES = "1.30"
SCHEMA_VERSIONS = (OLDEST_KUBERNETES, kubernetes_validate.utils.latest_version())
# The health names the server sets (BanditServer._set_health): overall and the service.
HEALTH_NAMES = {"", SERVICE_NAME}


def server() -> dict:
    return find("Deployment", "banditd")


def scheduler() -> dict:
    return find("Deployment", "banditd-scheduler")


def migrate_job() -> dict:
    return find("Job", "banditd-migrate")


def workloads() -> list[dict]:
    return [r for r in resources() if r["kind"] in ("Deployment", "Job")]


def image_env() -> dict[str, str]:
    return dockerfile.stages()[-1].env()


def env_of(workload: dict) -> dict[str, str]:
    return container_env(workload, image_env=image_env(), secrets=base_secret_values())


@contextlib.contextmanager
def environment(env: dict[str, str]):
    """Exactly ``env`` as os.environ (click reads envvar defaults from it)."""
    with mock.patch.dict(os.environ, env, clear=True):
        yield


def serve_params(workload: dict) -> dict:
    """``banditd serve``'s parameters as the server container would get them: its
    arguments parsed by the real command, every unset flag from the container's
    environment or its default."""
    spec = container(workload)
    assert "command" not in spec, "the server container runs the image's entrypoint"
    with environment(env_of(workload)):
        return serve_command.make_context("serve", list(spec.get("args", []))).params


def banditctl_context(workload: dict) -> click.Context:
    """The container's ``banditctl ...`` command line parsed by banditctl itself."""
    spec = container(workload)
    words = [*spec["command"], *spec.get("args", [])]
    assert words[0] == "banditctl", words
    parent = click.Context(banditctl, info_name="banditctl")
    command = banditctl.get_command(parent, words[1])
    assert command is not None, f"banditctl has no command {words[1]!r}"
    with environment(env_of(workload)):
        return command.make_context(words[1], words[2:], parent=parent)


def envvars(command: click.Command) -> set[str]:
    return {p.envvar for p in command.params if isinstance(p.envvar, str)}


# -- schemas and the kustomization ------------------------------------------------------


# kustomization.yaml is kustomize's, not a Kubernetes object: it is built below.
MANIFESTS = sorted(p for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_object_validates_against_the_kubernetes_schemas(path, version):
    for document in documents(path):
        kubernetes_validate.validate(document, version, strict=True)


def test_strict_validation_rejects_a_misspelt_field():
    """The check above can fail: strict schemas refuse fields Kubernetes does not know."""
    deployment = server()
    spec = dict(container(deployment))
    spec["readinesProbe"] = spec.pop("readinessProbe")
    broken = {**deployment, "spec": {**deployment["spec"], "template": {
        **pod_template(deployment),
        "spec": {**pod_template(deployment)["spec"], "containers": [spec]}}}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(broken, OLDEST_KUBERNETES, strict=True)


def test_the_kustomization_lists_every_manifest_and_only_existing_ones():
    listed = kustomization()["resources"]
    present = {p.name for p in BASE.iterdir()} - {"kustomization.yaml"}
    assert len(listed) == len(set(listed))
    assert set(listed) == present


def test_every_container_takes_its_tag_from_the_kustomization():
    [image] = kustomization()["images"]
    assert image["name"] == IMAGE and image["newTag"]
    for workload in workloads():
        for spec in pod_template(workload)["spec"]["containers"]:
            assert spec["image"] == IMAGE, (workload["metadata"]["name"], spec["image"])


def test_kustomize_builds_the_base_with_the_release_tag_on_every_container():
    kustomize = shutil.which("kustomize")
    command = [kustomize, "build"] if kustomize else None
    if command is None and shutil.which("kubectl"):
        command = ["kubectl", "kustomize"]
    if command is None:
        pytest.skip("neither kustomize nor kubectl is installed")
    built = subprocess.run([*command, str(BASE)], check=True, capture_output=True, text=True,
                           timeout=120).stdout
    objects = [doc for doc in yaml.safe_load_all(built) if doc]
    assert sorted((o["kind"], o["metadata"]["name"]) for o in objects) == sorted(
        (r["kind"], r["metadata"]["name"]) for r in resources())
    tag = kustomization()["images"][0]["newTag"]
    images = {c["image"] for o in objects if o["kind"] in ("Deployment", "Job")
              for c in o["spec"]["template"]["spec"]["containers"]}
    assert images == {f"{IMAGE}:{tag}"}


# -- the server Deployment ----------------------------------------------------------------


def test_every_banditd_variable_the_server_gets_is_a_serve_flag():
    """click ignores an environment variable no option names, so a misspelt or renamed
    BANDITD_ variable would silently leave the default in force."""
    accepted = envvars(serve_command)
    passed = {name for name in env_of(server()) if name.startswith("BANDITD_")}
    assert passed and passed <= accepted, passed - accepted


def test_the_server_serves_on_the_pod_address_with_the_ports_the_pod_declares():
    params = serve_params(server())
    ports = {p["name"]: p["containerPort"] for p in container(server())["ports"]}
    annotations = pod_template(server())["metadata"]["annotations"]
    assert params["host"] == "0.0.0.0" and params["metrics_host"] == "0.0.0.0"
    assert params["port"] == ports["grpc"]
    assert params["metrics_port"] == ports["metrics"] == int(annotations["prometheus.io/port"])
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_server_reads_its_database_and_redis_from_the_secret_and_does_not_migrate():
    params = serve_params(server())
    [secret] = base_secret_values().values()
    assert params["database_url"] == secret["database-url"]
    assert params["redis_url"] == secret["redis-url"]
    assert params["migrate"] is False


def test_the_workers_follow_the_cpu_limit():
    from banditd.server.workers import parse_workers

    params = serve_params(server())
    limit = cpu_cores(container(server())["resources"]["limits"]["cpu"])
    assert limit == int(limit), "a whole number of cores: one worker each"
    assert parse_workers(params["workers"]) == limit


@pytest.mark.parametrize("probe", ["startupProbe", "readinessProbe", "livenessProbe"])
def test_probes_ask_grpc_health_on_the_grpc_port_for_a_name_the_server_reports(probe):
    spec = container(server())
    grpc = spec[probe]["grpc"]
    grpc_port = next(p["containerPort"] for p in spec["ports"] if p["name"] == "grpc")
    assert grpc["port"] == grpc_port == serve_params(server())["port"]
    assert grpc.get("service", "") in HEALTH_NAMES


def test_readiness_asks_for_the_decision_service():
    assert container(server())["readinessProbe"]["grpc"]["service"] == SERVICE_NAME


def test_start_up_may_outlast_the_database_wait():
    """A server that waits for PostgreSQL (``--database-wait``) answers NOT_SERVING; the
    startup probe must not have it killed before the server gives up by itself."""
    probe = container(server())["startupProbe"]
    budget = probe["periodSeconds"] * probe["failureThreshold"]
    assert budget > serve_params(server())["database_wait"] + 30


def test_termination_grace_covers_the_pre_stop_pause_and_the_drain():
    """After the preStop pause the server gives in-flight calls --grace seconds, then
    queued rewards up to --grace again, then flushes the decision log (app.py stop())."""
    spec = pod_template(server())["spec"]
    pause = container(server())["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = serve_params(server())["grace_seconds"]
    assert spec["terminationGracePeriodSeconds"] >= pause + 2 * grace + 10


def test_the_server_runs_as_the_images_user_with_a_read_only_root():
    [uid, _, gid] = dockerfile.stages()[-1].last("USER").value.partition(":")
    for workload in workloads():
        pod = pod_template(workload)["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == int(uid) != 0
        assert pod["securityContext"]["runAsGroup"] == int(gid)
        assert pod["automountServiceAccountToken"] is False
        context = container(workload)["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]


def _mounted(workload: dict, path: str) -> bool:
    mounts = [m["mountPath"] for m in container(workload).get("volumeMounts", [])]
    return any(Path(path).is_relative_to(m) for m in mounts)


def test_what_a_container_writes_is_on_a_mounted_volume():
    """With a read-only root, the log directory and /tmp must be volumes."""
    assert _mounted(server(), serve_params(server())["log_dir"])
    assert _mounted(scheduler(), banditctl_context(scheduler()).params["log_dir"])
    for workload in (server(), scheduler()):
        assert _mounted(workload, "/tmp")


def test_every_container_has_cpu_and_memory_requests_and_limits():
    for workload in workloads():
        resources_ = container(workload)["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources_[kind]), workload["metadata"]["name"]
    server_resources = container(server())["resources"]
    assert server_resources["requests"] == server_resources["limits"]  # Guaranteed QoS


def test_server_pods_spread_over_nodes_and_roll_without_losing_capacity():
    deployment = server()
    labels = pod_template(deployment)["metadata"]["labels"]
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    [by_node] = [c for c in pod_template(deployment)["spec"]["topologySpreadConstraints"]
                 if c["topologyKey"] == "kubernetes.io/hostname"]
    assert by_node["whenUnsatisfiable"] == "DoNotSchedule" and by_node["maxSkew"] == 1
    assert selects(by_node["labelSelector"], labels)


# -- services, PDB, secrets ---------------------------------------------------------------


def _pod_labels(workload: dict) -> dict:
    return pod_template(workload)["metadata"]["labels"]


@pytest.mark.parametrize("name", ["banditd-headless", "banditd"])
def test_services_select_the_server_pods_only(name):
    service = find("Service", name)
    assert selects(service["spec"]["selector"], _pod_labels(server()))
    assert selects(server()["spec"]["selector"], _pod_labels(server()))
    for other in (scheduler(), migrate_job()):
        assert not selects(service["spec"]["selector"], _pod_labels(other))
    port_names = {p["name"] for p in container(server())["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in port_names


def test_the_headless_service_publishes_pod_addresses_for_round_robin():
    spec = find("Service", "banditd-headless")["spec"]
    assert spec["clusterIP"] == "None"
    assert not spec.get("publishNotReadyAddresses", False)  # only SERVING pods in DNS
    [grpc] = [p for p in spec["ports"] if p["name"] == "grpc"]
    assert grpc["port"] == serve_params(server())["port"]


def test_the_disruption_budget_covers_the_server_pods_only():
    budget = find("PodDisruptionBudget", "banditd")
    assert selects(budget["spec"]["selector"], _pod_labels(server()))
    for other in (scheduler(), migrate_job()):
        assert not selects(budget["spec"]["selector"], _pod_labels(other))
    assert budget["spec"]["maxUnavailable"] < server()["spec"]["replicas"]


def test_every_secret_and_config_map_a_container_reads_exists_in_the_base():
    secrets = base_secret_values()
    config_maps = {r["metadata"]["name"] for r in resources() if r["kind"] == "ConfigMap"}
    for workload in workloads():
        spec = container(workload)
        for source in spec.get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in config_maps
            else:
                assert source["secretRef"]["name"] in secrets
        for variable in spec.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["key"] in secrets[ref["name"]], (variable["name"], ref)


def test_the_secret_is_a_template_with_placeholders():
    [secret] = [r for r in resources() if r["kind"] == "Secret"]
    assert "REPLACE_ME" in secret["stringData"]["database-url"]
    assert "data" not in secret  # placeholders in plain text, not base64 that hides them


# -- the migrate Job and the scheduler ----------------------------------------------------


def test_the_job_runs_banditctl_migrate_on_the_servers_database():
    job = migrate_job()
    context = banditctl_context(job)
    assert context.command is migrate_command
    assert context.params["database_url"] == serve_params(server())["database_url"]
    passed = {v["name"] for v in container(job)["env"]}
    assert passed <= envvars(migrate_command), passed
    assert pod_template(job)["spec"]["restartPolicy"] in ("Never", "OnFailure")
    assert job["spec"]["backoffLimit"] >= 1  # PostgreSQL may come up after the Job


def test_the_scheduler_is_one_replica_replaced_with_recreate():
    deployment = scheduler()
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_the_scheduler_runs_banditctl_scheduler_with_flags_it_accepts(monkeypatch):
    from banditd.server.experiment_store import current_actor

    context = banditctl_context(scheduler())
    assert context.command is scheduler_command
    assert context.params["database_url"] == serve_params(server())["database_url"]
    env = env_of(scheduler())
    # What the manifest sets (the image's ENV is for `banditd serve`; banditctl ignores it).
    passed = {v["name"] for v in container(scheduler())["env"]}
    read_elsewhere = {"BANDITD_ACTOR"}
    assert passed <= envvars(scheduler_command) | read_elsewhere, passed
    monkeypatch.setenv("BANDITD_ACTOR", env["BANDITD_ACTOR"])
    assert current_actor() == env["BANDITD_ACTOR"]  # who the audit trail names
