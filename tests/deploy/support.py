"""Helpers for the deployment tests: the compose file as compose reads it, kustomize
renderings, the Dockerfile's stages, Prometheus expressions."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("staging", "production")
# The Kubernetes version the manifests target (deploy/README.md says why 1.33).
KUBERNETES_VERSION = "1.33.0"


# --- compose ---------------------------------------------------------------------------
def load_compose() -> dict:
    """deploy/docker-compose.yml with YAML anchors and merge keys resolved, not
    interpolated."""
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}"
)


def interpolate(value, env: dict[str, str]):
    """Compose's interpolation of ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}
    and $$ in every string of value."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name)
        if op == ":-":
            return current if current else arg
        if op == "-":
            return arg if current is None else current
        if op in (":?", "?"):
            missing = not current if op == ":?" else current is None
            if missing:
                raise KeyError(f"{name}: {arg}")
            return current
        return current or ""

    return INTERPOLATION.sub(substitute, value)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines of a compose .env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def service_environment(service: str, env: dict[str, str]) -> dict[str, str]:
    """What compose gives a service's container (its environment, interpolated)."""
    declared = load_compose()["services"][service].get("environment", {})
    return {
        key: "" if value is None else str(value)
        for key, value in interpolate(declared, env).items()
    }


def healthcheck_command(test: list[str] | str) -> list[str]:
    """A compose or Dockerfile health check test as argv."""
    if isinstance(test, str):
        return ["sh", "-c", test]
    kind, *argv = test
    return argv if kind == "CMD" else ["sh", "-c", argv[0]]


# --- Dockerfile --------------------------------------------------------------------------
def dockerfile_stages(path: Path = DEPLOY / "Dockerfile") -> dict[str, list[tuple[str, str]]]:
    """Each stage's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            match = re.search(r"\bAS\s+(\S+)", arguments, re.IGNORECASE)
            current = stages.setdefault(match.group(1) if match else arguments, [])
        if current is not None:
            current.append((instruction, arguments.strip()))
    return stages


def exec_form(arguments: str) -> list[str]:
    """A JSON (exec form) CMD or HEALTHCHECK CMD argument list."""
    return json.loads(arguments[arguments.index("[") :])


# --- kustomize ---------------------------------------------------------------------------
def kubectl() -> str | None:
    """kubectl on PATH, or the one scripts/services.sh puts beside the venv's python."""
    beside_python = Path(sys.executable).parent / "kubectl"
    return shutil.which("kubectl") or (str(beside_python) if beside_python.exists() else None)


@cache
def render(overlay: str) -> tuple[dict, ...]:
    """`kubectl kustomize deploy/k8s/overlays/<overlay>` as objects."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(objects, kind: str) -> list[dict]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects, kind: str, name: str) -> dict:
    (found,) = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    return found


def pod_templates(objects) -> list[tuple[dict, dict]]:
    """(workload, pod spec) for every Deployment, Job and CronJob."""
    templates = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            templates.append((obj, obj["spec"]["template"]["spec"]))
        elif obj["kind"] == "CronJob":
            templates.append((obj, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return templates


# --- Prometheus ---------------------------------------------------------------------------
PROMQL_WORDS = frozenset(
    {
        *("sum", "rate", "irate", "increase", "avg", "min", "max", "count", "quantile"),
        *("by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"),
        *("and", "or", "unless", "le", "histogram_quantile", "humanizePercentage"),
        *("abs", "absent", "ceil", "floor", "round", "clamp_min", "clamp_max", "topk"),
        *("bottomk", "stddev", "label_replace", "label_join", "time", "vector", "scalar"),
        *("avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "deriv"),
        *("count_over_time", "delta", "idelta", "predict_linear", "changes", "resets"),
        *("sort", "sort_desc"),
    }
)


def metric_names(expression: str) -> set[str]:
    """The series names an expression selects (not functions, labels or keywords)."""
    without_labels = re.sub(r"\{[^}]*\}", "", expression)
    without_strings = re.sub(r'"[^"]*"', "", without_labels)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_strings)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_groupings)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
    return {
        name
        for name in names - PROMQL_WORDS
        if not re.fullmatch(r"[0-9.e]+", name) and not name.startswith("$")
    }


def base_metric(series: str) -> str:
    """The metric family a series belongs to (histogram _bucket/_sum/_count)."""
    return re.sub(r"_(bucket|sum|count)$", "", series)


def nginx_renderer():
    """scripts/render_nginx.py, the one way deploy/nginx/nginx.conf is made local."""
    spec = importlib.util.spec_from_file_location("render_nginx", ROOT / "scripts/render_nginx.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
