"""The Kubernetes base in deploy/kubernetes as data, and what a kubelet would make of it:
the environment a container gets (image ENV, envFrom, env with its references), and the
pods a selector picks."""

from __future__ import annotations

import base64
import math
import re
from pathlib import Path

import yaml

from tests.checkout import ROOT

BASE = ROOT / "deploy" / "kubernetes"
IMAGE = "ghcr.io/banditd/banditd"


def kustomization() -> dict:
    return yaml.safe_load((BASE / "kustomization.yaml").read_text())


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def resources() -> list[dict]:
    """Every object the base's kustomization lists, in its order."""
    return [doc for name in kustomization()["resources"] for doc in documents(BASE / name)]


def find(kind: str, name: str) -> dict:
    [found] = [r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def pod_template(workload: dict) -> dict:
    return workload["spec"]["template"]


def container(workload: dict) -> dict:
    [only] = pod_template(workload)["spec"]["containers"]
    return only


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (a Service's plain map, or ``matchLabels`` with
    optional ``matchExpressions``) selects an object with ``labels``."""
    if "matchLabels" in selector or "matchExpressions" in selector:
        exact = selector.get("matchLabels", {})
        expressions = selector.get("matchExpressions", [])
    else:
        exact, expressions = selector, []
    if not exact and not expressions:
        return False  # an empty selector is refused where it matters (Services, PDBs)
    if any(labels.get(key) != value for key, value in exact.items()):
        return False
    for expression in expressions:
        value, values = labels.get(expression["key"]), expression.get("values", [])
        operator = expression["operator"]
        if (operator == "In" and value not in values) or (
                operator == "NotIn" and value in values) or (
                operator == "Exists" and value is None) or (
                operator == "DoesNotExist" and value is not None):
            return False
    return True


_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")


def cpu_cores(quantity: str | int | float) -> float:
    """A CPU quantity (``2``, ``1.5``, ``500m``) in cores."""
    match = _QUANTITY.match(str(quantity))
    if match is None:
        raise ValueError(f"not a CPU quantity: {quantity!r}")
    number = float(match[1])
    return number / 1000 if match[2] else number


def container_env(workload: dict, *, image_env: dict[str, str], secrets: dict[str, dict],
                  pod_name: str = "banditd-0") -> dict[str, str]:
    """The environment the kubelet gives the workload's container: the image's ENV,
    overridden by ``envFrom`` (ConfigMaps and Secrets of the base), overridden by
    ``env``. ``secrets`` maps a Secret's name to the values to use for it (tests put a
    real database there); a ``resourceFieldRef`` to ``limits.cpu`` resolves as the
    kubelet does, the limit divided by the divisor and rounded up."""
    spec = container(workload)
    env = dict(image_env)
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(find("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            env.update(secrets[source["secretRef"]["name"]])
    for variable in spec.get("env", []):
        if "value" in variable:
            env[variable["name"]] = str(variable["value"])
            continue
        ref = variable["valueFrom"]
        if "secretKeyRef" in ref:
            values = secrets[ref["secretKeyRef"]["name"]]
            key = ref["secretKeyRef"]["key"]
            if key in values:
                env[variable["name"]] = values[key]
            elif not ref["secretKeyRef"].get("optional", False):
                raise KeyError(f"{variable['name']}: no key {key!r} in the Secret")
        elif "configMapKeyRef" in ref:
            data = find("ConfigMap", ref["configMapKeyRef"]["name"])["data"]
            env[variable["name"]] = data[ref["configMapKeyRef"]["key"]]
        elif "resourceFieldRef" in ref:
            field = ref["resourceFieldRef"]
            [target] = [c for c in pod_template(workload)["spec"]["containers"]
                        if c["name"] == field.get("containerName", spec["name"])]
            kind, _, resource = field["resource"].partition(".")
            assert resource == "cpu", f"only CPU resource fields are resolved, not {resource}"
            amount = cpu_cores(target["resources"][kind][resource])
            divisor = cpu_cores(field.get("divisor", "1"))
            env[variable["name"]] = str(math.ceil(amount / divisor))
        elif "fieldRef" in ref:
            path = ref["fieldRef"]["fieldPath"]
            assert path == "metadata.name", f"only metadata.name is resolved, not {path}"
            env[variable["name"]] = pod_name
        else:
            raise ValueError(f"unknown valueFrom in {variable}")
    return env


def base_secret_values() -> dict[str, dict]:
    """Every Secret of the base by name, with its (placeholder) values."""
    return {r["metadata"]["name"]: {
                **{k: base64.b64decode(v).decode() for k, v in r.get("data", {}).items()},
                **r.get("stringData", {})}
            for r in resources() if r["kind"] == "Secret"}
