"""deploy/k8s: each overlay renders with `kubectl kustomize`, every object passes strict
schema validation for the targeted Kubernetes version, and the rendered objects keep
the deployment's invariants (seed 4.1-4.2, 5.3-5.4, 6.4, 2.3)."""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands
from django.urls import Resolver404, resolve

from tests.deploy.support import (
    DEPLOY,
    K8S,
    KUBERNETES_VERSION,
    OVERLAYS,
    ROOT,
    kubectl,
    named,
    of_kind,
    pod_templates,
    render,
)

pytestmark = pytest.mark.skipif(
    kubectl() is None, reason="kubectl is not installed (scripts/services.sh installs it)"
)

# Custom resources: no schema ships with kubernetes-validate for them, so their required
# fields are checked by hand below (test_custom_resources_carry_their_required_fields).
CUSTOM_RESOURCES = {
    ("keda.sh/v1alpha1", "ScaledObject"): "KEDA's CRD (worker autoscaling on queue depth)",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "KEDA's CRD (Redis credentials)",
}
APP_CONTAINERS = {"web": "voice-server", "worker": "voice-worker", "beat": "voice-beat"}
SEED_RESOURCES = {
    "voice-server": {
        "requests": {"cpu": "500m", "memory": "512Mi"},
        "limits": {"cpu": "2000m", "memory": "2Gi"},
    },
    "voice-worker": {
        "requests": {"cpu": "1000m", "memory": "1Gi"},
        "limits": {"cpu": "4000m", "memory": "8Gi"},
    },
}
# Seed 5.4: (cron, web minimum).
SEED_SCHEDULE = {
    ("0 8 * * 1-5", 5),
    ("0 10 * * 1-5", 8),
    ("0 18 * * 1-5", 4),
    ("0 22 * * 1-5", 3),
    ("0 0 * * 0,6", 3),
}
SECRET_TEMPLATE = K8S / "base/secret.example.yaml"


@pytest.fixture(params=OVERLAYS)
def objects(request):
    return render(request.param)


def _config(objects) -> dict:
    """The app's ConfigMap in the main namespace (the worker's is its copy)."""
    (config,) = [
        c for c in of_kind(objects, "ConfigMap") if c["metadata"]["name"].startswith("voice-config")
    ]
    return config


def containers(objects):
    for workload, spec in pod_templates(objects):
        for container in spec["containers"]:
            yield workload, spec, container


# --- rendering and schemas ----------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders(overlay):
    objects = render(overlay)
    namespace = f"voice-{overlay}"

    assert named(objects, "Namespace", namespace)
    assert named(objects, "Namespace", f"{namespace}-sandbox")
    assert {obj["metadata"].get("namespace") for obj in objects if obj["kind"] != "Namespace"} == {
        namespace,
        f"{namespace}-sandbox",
    }


def test_every_object_passes_strict_validation(objects):
    checked = 0
    for obj in [*objects, yaml.safe_load(SECRET_TEMPLATE.read_text())]:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCES:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked > 20


def test_strict_validation_refuses_a_misspelt_field():
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"portz": []},
    }

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, KUBERNETES_VERSION, strict=True)


def test_custom_resources_carry_their_required_fields(objects):
    kinds = {(obj["apiVersion"], obj["kind"]) for obj in objects} - {
        (o["apiVersion"], o["kind"])
        for o in objects
        if not o["apiVersion"].endswith("keda.sh/v1alpha1")
    }
    assert kinds == set(CUSTOM_RESOURCES)
    (scaled,) = of_kind(objects, "ScaledObject")
    spec = scaled["spec"]
    assert named(objects, "Deployment", spec["scaleTargetRef"]["name"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert all(trigger["type"] and "metadata" in trigger for trigger in spec["triggers"])
    queues = [t for t in spec["triggers"] if t["type"] == "redis"]
    # Every queue a worker consumes, the tool calls' fast and slow ones included.
    assert [queue["metadata"]["listName"] for queue in queues] == [
        queue.name for queue in settings.CELERY_TASK_QUEUES
    ]
    secret_keys = set(yaml.safe_load(SECRET_TEMPLATE.read_text())["stringData"])
    for queue in queues:
        assert int(queue["metadata"]["listLength"]) > 0
        auth = named(objects, "TriggerAuthentication", queue["authenticationRef"]["name"])
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["parameter"] in ("address", "password")
            assert ref["name"] == "voice-secrets" and ref["key"] in secret_keys


def test_workers_consume_every_queue_with_more_processes_than_a_session_may_hold(objects):
    (container,) = named(objects, "Deployment", "voice-worker")["spec"]["template"]["spec"][
        "containers"
    ]
    args = container["args"]

    # Without -Q a worker consumes every queue in CELERY_TASK_QUEUES.
    assert not {"-Q", "--queues", "-X", "--exclude-queues"} & set(args)
    assert int(args[args.index("--concurrency") + 1]) > settings.TOOLS_MAX_RUNNING_PER_SESSION


# --- pods: identity, privileges, resources --------------------------------------------------
def test_every_pod_runs_as_non_root_with_a_read_only_root_and_no_capabilities(objects):
    for workload, spec, container in containers(objects):
        where = f"{workload['metadata']['name']}/{container['name']}"
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, where
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", where
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, where
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["capabilities"] == {"drop": ["ALL"]}, where
        assert not security.get("privileged"), where


def test_only_the_worker_loosens_seccomp_and_apparmor_for_bubblewrap(objects):
    loosened = {}
    for workload, spec, container in containers(objects):
        security = container["securityContext"]
        profiles = {
            "seccomp": security.get("seccompProfile", {}).get("type", "RuntimeDefault"),
            "apparmor": security.get("appArmorProfile", {}).get("type", "RuntimeDefault"),
            "proc": security.get("procMount", "Default"),
        }
        if profiles != {
            "seccomp": "RuntimeDefault",
            "apparmor": "RuntimeDefault",
            "proc": "Default",
        }:
            loosened[workload["metadata"]["name"]] = (profiles, spec.get("hostUsers"))

    assert loosened == {
        "voice-worker": (
            {"seccomp": "Unconfined", "apparmor": "Unconfined", "proc": "Unmasked"},
            False,
        )
    }


def test_every_container_has_requests_and_limits_and_the_seeds_where_it_gives_them(objects):
    for workload, _spec, container in containers(objects):
        resources = container["resources"]
        assert set(resources) == {"requests", "limits"}
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
        if workload["metadata"]["name"] in SEED_RESOURCES:
            assert resources == SEED_RESOURCES[workload["metadata"]["name"]]


def test_app_containers_write_only_to_their_empty_dirs_and_read_the_secret_as_files(objects):
    secret_keys = set(yaml.safe_load(SECRET_TEMPLATE.read_text())["stringData"])
    for _workload, spec, container in containers(objects):
        if container["name"] not in (*APP_CONTAINERS, "migrate"):
            continue
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]] and "emptyDir" in volumes[mounts["/app/var"]]
        assert volumes[mounts["/run/secrets/voice"]]["secret"]["secretName"] == "voice-secrets"
        env = {item["name"]: item for item in container["env"]}
        files = {name: item["value"] for name, item in env.items() if name.endswith("_FILE")}
        assert set(files) - {"METRICS_BEARER_TOKEN_FILE"} == {
            "SECRET_KEY_FILE",
            "DATABASE_URL_FILE",
            "REDIS_URL_FILE",
            "OPENAI_API_KEY_FILE",
            "OPENAI_WEBHOOK_SECRET_FILE",
        }
        # Only the process that serves /metrics needs its token.
        assert ("METRICS_BEARER_TOKEN_FILE" in files) == (container["name"] == "web")
        assert {Path(path).name for path in files.values()} <= secret_keys
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert spec["automountServiceAccountToken"] is False


def test_every_configured_name_is_a_setting_the_app_reads(objects):
    config = _config(objects)
    settings_source = (ROOT / "voiceplatform/settings.py").read_text()

    for key in config["data"]:
        assert f'"{key}"' in settings_source, f"{key} is read by no setting"


# --- rollouts, spread, probes, shutdown --------------------------------------------------
def test_web_and_workers_roll_out_without_losing_a_pod_and_beat_never_runs_twice(objects):
    for name in ("voice-server", "voice-worker"):
        strategy = named(objects, "Deployment", name)["spec"]["strategy"]
        assert strategy == {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
        }
    beat = named(objects, "Deployment", "voice-beat")["spec"]
    assert beat["strategy"] == {"type": "Recreate"} and beat["replicas"] == 1


def test_web_and_workers_spread_across_zones(objects):
    for name in ("voice-server", "voice-worker"):
        spec = named(objects, "Deployment", name)["spec"]["template"]["spec"]
        keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
        assert "topology.kubernetes.io/zone" in keys


def _http_probes(objects) -> dict[str, str]:
    container = named(objects, "Deployment", "voice-server")["spec"]["template"]["spec"][
        "containers"
    ][0]
    return {
        kind: container[kind]["httpGet"]["path"]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }


def _served(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


def test_the_web_probes_ask_paths_the_app_serves(objects):
    probes = _http_probes(objects)

    assert probes["startupProbe"] == probes["livenessProbe"] == "/health/live"
    assert probes["readinessProbe"] == "/health/ready"
    assert all(_served(path) for path in probes.values())


def test_worker_and_beat_probes_run_their_own_health_check(objects):
    for process, name in (("worker", "voice-worker"), ("beat", "voice-beat")):
        container = named(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[kind]["exec"]["command"] == [
                "python",
                "-m",
                "voiceplatform.healthcheck",
                process,
            ]


def test_web_pods_outlive_their_longest_session_and_workers_their_longest_tool(objects):
    web = named(objects, "Deployment", "voice-server")["spec"]["template"]["spec"]
    worker = named(objects, "Deployment", "voice-worker")["spec"]["template"]["spec"]

    assert web["terminationGracePeriodSeconds"] > settings.SESSION_MAX_SECONDS
    assert worker["terminationGracePeriodSeconds"] > settings.TOOL_TIMEOUT_SECONDS + 30
    assert web["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == [
        "python",
        "manage.py",
        "drain",
    ]


def test_the_pre_stop_drain_is_a_command_the_app_has():
    assert "drain" in get_commands()


def test_images_are_the_right_targets(objects):
    for _workload, _spec, container in containers(objects):
        image = container["image"]
        expected = {"web": "web", "migrate": "web", "worker": "worker", "beat": "beat"}.get(
            container["name"]
        )
        if expected:
            assert re.search(rf"voiceplatform/{expected}:[\w.-]+$", image), image


# --- disruption budgets, network ------------------------------------------------------------
def test_every_scaled_deployment_has_a_disruption_budget(objects):
    budgets = of_kind(objects, "PodDisruptionBudget")
    for name in ("voice-server", "voice-worker"):
        labels = named(objects, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1 and covering[0]["spec"]["maxUnavailable"] == 1


def test_network_policies_deny_by_default(objects):
    policies = of_kind(objects, "NetworkPolicy")

    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_network_policies_open_only_the_seeds_ports(objects):
    ingress_ports, egress = set(), {}
    for policy in of_kind(objects, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        who = selector.get("matchLabels", {}).get("app.kubernetes.io/component") or str(selector)
        for rule in policy["spec"].get("ingress", []):
            ingress_ports |= {p["port"] for p in rule["ports"]}
            if any(p["port"] == 9108 for p in rule["ports"]):  # the worker's metrics
                monitoring = {"kubernetes.io/metadata.name": "monitoring"}
                assert who == "worker"
                assert rule["from"] == [{"namespaceSelector": {"matchLabels": monitoring}}]
        for rule in policy["spec"].get("egress", []):
            assert rule.get("ports"), f"{policy['metadata']['name']}: an egress rule without ports"
            egress.setdefault(who, set()).update(p["port"] for p in rule["ports"])

    assert ingress_ports == {8000, 9108}
    assert set().union(*egress.values()) <= {53, 5432, 6379, 443, 80, 6443, 4317}
    assert sorted(who for who, ports in egress.items() if 4317 in ports) == ["web", "worker"], (
        "traces go out from the processes that make them"
    )
    assert [who for who, ports in egress.items() if 80 in ports] == ["worker"], (
        "plain HTTP only for the worker's web_fetch"
    )
    assert egress["beat"] == {6379} and egress["migrate"] == {5432}


def test_traces_reach_only_the_collector_the_commented_endpoint_names(objects):
    collector = yaml.safe_load((DEPLOY / "observability/otel-collector.yaml").read_text())
    grpc = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    commented = [
        line.removeprefix("# ").partition("=")[2]
        for line in (K8S / "base/config.env").read_text().splitlines()
        if line.startswith("# OTEL_EXPORTER_OTLP_ENDPOINT=")
    ]
    rules = [
        rule
        for policy in of_kind(objects, "NetworkPolicy")
        for rule in policy["spec"].get("egress", [])
        if any(port["port"] == 4317 for port in rule["ports"])
    ]

    # Off unless an operator sets it; when set, the collector in "monitoring" on 4317.
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in _config(objects)["data"]
    assert commented == ["http://otel-collector.monitoring.svc:4317"]
    assert grpc.endswith(":4317")
    assert len(rules) == 2
    for rule in rules:
        (to,) = rule["to"]
        assert to == {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
        }
    pipeline = collector["service"]["pipelines"]["traces"]
    assert pipeline["receivers"] == ["otlp"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(pipeline[kind]) <= set(collector[kind]), f"{kind} used but not configured"


# --- ingress and affinity ---------------------------------------------------------------------
def test_the_ingress_owns_the_affinity_cookie_and_the_app_stays_silent(objects):
    config = _config(objects)
    routed = [
        i
        for i in of_kind(objects, "Ingress")
        if "affinity" in str(i["metadata"].get("annotations"))
    ]

    assert config["data"]["SESSION_AFFINITY_COOKIE"] == "off"
    assert {i["metadata"]["name"] for i in routed} == {
        "voice-ingress",
        "voice-ingress-tools",
        "voice-ingress-ws",
    }
    for ingress in routed:
        a = {
            k.removeprefix("nginx.ingress.kubernetes.io/"): v
            for k, v in ingress["metadata"]["annotations"].items()
        }
        assert a["affinity"] == "cookie" and a["affinity-mode"] == "persistent"
        assert a["session-cookie-name"] == "VOICE_AFFINITY"
        assert a["session-cookie-max-age"] == str(settings.SESSION_MAX_SECONDS)
        assert a["session-cookie-path"] == "/"


def test_the_ingress_times_out_the_api_at_30_s_and_tools_after_the_apps_own_300_s(objects):
    timeouts = {
        ingress["spec"]["rules"][0]["http"]["paths"][0]["path"]: int(
            ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"]
        )
        for ingress in of_kind(objects, "Ingress")
        if "nginx.ingress.kubernetes.io/proxy-read-timeout" in ingress["metadata"]["annotations"]
    }

    assert timeouts["/"] == 30
    assert settings.TOOL_TIMEOUT_SECONDS <= timeouts["/tools"] <= settings.TOOL_TIMEOUT_SECONDS + 30
    assert timeouts["/ws"] == 3600


def test_tls_comes_from_cert_manager_and_metrics_are_never_routed(objects):
    ingresses = of_kind(objects, "Ingress")
    issuers = [
        i for i in ingresses if "cert-manager.io/cluster-issuer" in i["metadata"]["annotations"]
    ]
    metrics = named(objects, "Ingress", "voice-ingress-metrics-denied")

    assert len(issuers) == 1, "one Certificate per secret"
    assert all(i["spec"]["tls"][0]["secretName"] == "voice-tls" for i in ingresses)
    assert all(i["spec"]["ingressClassName"] == "nginx" for i in ingresses)
    assert metrics["spec"]["rules"][0]["http"]["paths"][0] == {
        "path": "/metrics",
        "pathType": "Exact",
        "backend": {"service": {"name": "voice-server-svc", "port": {"name": "http"}}},
    }
    assert (
        metrics["metadata"]["annotations"]["nginx.ingress.kubernetes.io/denylist-source-range"]
        == "0.0.0.0/0,::/0"
    )


# --- autoscaling ------------------------------------------------------------------------------
def test_the_web_hpa_scales_as_the_seed_says(objects):
    spec = named(objects, "HorizontalPodAutoscaler", "voice-server-hpa")["spec"]
    metrics = {m["type"]: m for m in spec["metrics"] if m["type"] == "Pods"}
    resources = {
        m["resource"]["name"]: m["resource"]["target"]["averageUtilization"]
        for m in spec["metrics"]
        if m["type"] == "Resource"
    }

    assert resources == {"cpu": 70, "memory": 80}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "voice_sessions_active"
    assert spec["behavior"]["scaleUp"] == {
        "stabilizationWindowSeconds": 15,
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    }
    assert spec["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 300,
        "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}],
    }


def test_production_raises_and_lowers_the_web_minimum_on_the_seeds_schedule():
    objects = render("production")
    hpa = named(objects, "HorizontalPodAutoscaler", "voice-server-hpa")["spec"]
    steps = set()
    for cron in of_kind(objects, "CronJob"):
        if cron["metadata"]["labels"]["app.kubernetes.io/component"] != "scheduler":
            continue
        command = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
            "command"
        ]
        assert command[:4] == ["kubectl", "patch", "horizontalpodautoscaler", "voice-server-hpa"]
        floor = yaml.safe_load(command[-1])["spec"]["minReplicas"]
        assert hpa["minReplicas"] <= floor <= hpa["maxReplicas"]
        steps.add((cron["spec"]["schedule"], floor))
    role = named(objects, "Role", "voice-scaler")

    assert steps == SEED_SCHEDULE
    assert role["rules"] == [
        {
            "apiGroups": ["autoscaling"],
            "resources": ["horizontalpodautoscalers"],
            "resourceNames": ["voice-server-hpa"],
            "verbs": ["get", "patch"],
        }
    ]


def test_staging_has_no_schedule_that_would_exceed_its_maximum():
    assert not [
        job
        for job in of_kind(render("staging"), "CronJob")
        if job["metadata"]["labels"]["app.kubernetes.io/component"] == "scheduler"
    ]


# --- migrations before the rollout ------------------------------------------------------------
def test_the_migration_job_and_what_it_needs_are_applied_first(objects):
    prepared = {
        (
            obj["kind"],
            obj["metadata"]["name"].rsplit("-", 1)[0]
            if obj["kind"] == "ConfigMap"
            else obj["metadata"]["name"],
        )
        for obj in objects
        if obj["metadata"].get("labels", {}).get("voiceplatform.io/stage") == "prepare"
    }
    job = named(objects, "Job", "voice-migrate")["spec"]["template"]["spec"]
    script = (ROOT / "deploy/scripts/k8s-deploy.sh").read_text()

    assert job["containers"][0]["args"] == ["python", "manage.py", "migrate", "--noinput"]
    assert {
        ("Job", "voice-migrate"),
        ("ConfigMap", "voice-config"),
        ("ServiceAccount", job["serviceAccountName"]),
    } <= prepared
    assert any(kind == "Namespace" for kind, _ in prepared)
    assert {
        ("NetworkPolicy", "default-deny"),
        ("NetworkPolicy", "allow-dns"),
        ("NetworkPolicy", "migrate-egress"),
    } <= prepared
    assert "-l voiceplatform.io/stage=prepare" in script
    assert script.index("--for=condition=complete job/voice-migrate") < script.index(
        'kubectl apply -k "$dir"\n'
    )


# --- issue 22: local readiness, Pod Security per namespace, backups, worker isolation --------
def test_readiness_probes_ask_a_path_that_answers_from_local_state_only(objects):
    from ops_app import probes

    web = named(objects, "Deployment", "voice-server")["spec"]["template"]["spec"]
    path = web["containers"][0]["readinessProbe"]["httpGet"]["path"]

    assert resolve(path).func is probes.ready
    # Its checks are local ones only: no shared dependency (Redis, database, workers,
    # breakers), which are ops_app.health_checks' plugins.
    assert probes.Ready.checks == (probes.Starting, probes.Draining, probes.UnderCapacity)
    assert all(check.__module__ == "ops_app.probes" for check in probes.Ready.checks)
    assert path != "/health"


def test_web_and_beat_run_under_restricted_and_only_the_worker_is_privileged(objects):
    levels = {
        ns["metadata"]["name"]: ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        for ns in of_kind(objects, "Namespace")
    }
    where = {
        workload["metadata"]["name"]: workload["metadata"]["namespace"]
        for workload, _spec in pod_templates(objects)
    }

    for name in ("voice-server", "voice-beat", "voice-migrate", "voice-backup"):
        assert levels[where[name]] == "restricted", name
    assert levels[where["voice-worker"]] == "privileged"
    sandbox = [name for name, ns in where.items() if levels[ns] != "restricted"]
    assert sandbox == ["voice-worker"]


def test_every_namespace_denies_by_default(objects):
    for namespace in (ns["metadata"]["name"] for ns in of_kind(objects, "Namespace")):
        deny = [
            p
            for p in of_kind(objects, "NetworkPolicy")
            if p["metadata"]["namespace"] == namespace
            and p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
        ]
        assert deny, f"{namespace} has no default-deny policy"


def test_what_the_worker_reads_lives_in_its_own_namespace(objects):
    worker = named(objects, "Deployment", "voice-worker")
    namespace = worker["metadata"]["namespace"]
    spec = worker["spec"]["template"]["spec"]
    config = spec["containers"][0]["envFrom"][0]["configMapRef"]["name"]
    (scaled,) = of_kind(objects, "ScaledObject")

    assert named(objects, "ConfigMap", config)["metadata"]["namespace"] == namespace
    assert (
        named(objects, "ServiceAccount", spec["serviceAccountName"])["metadata"]["namespace"]
        == namespace
    )
    assert scaled["metadata"]["namespace"] == namespace
    assert named(objects, "PodDisruptionBudget", "voice-worker")["metadata"]["namespace"] == (
        namespace
    )


def test_a_daily_backup_cronjob_stores_dumps_and_prunes_after_thirty_days(objects):
    cron = named(objects, "CronJob", "voice-backup")
    spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    config = _config(objects)["data"]
    script = (ROOT / "deploy/scripts/backup-job.sh").read_text()

    minute, hour, *every_day = cron["spec"]["schedule"].split()
    assert every_day == ["*", "*", "*"] and minute.isdigit() and hour.isdigit()
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert container["args"] == ["deploy/scripts/backup-job.sh"]
    assert "backups push" in script and "backups prune" in script
    assert env["BACKUP_RETENTION_DAYS"] == "30"
    assert config["BACKUP_BUCKET"], "dumps go to object storage"
    assert container["image"].rsplit(":", 1)[0].endswith("voiceplatform/backup")


def test_the_workers_isolation_is_what_its_start_up_line_reports(objects, settings, monkeypatch):
    """The worker pod has no writable cgroup (not privileged, /sys/fs/cgroup mounted
    read-only by the runtime): its start-up line must say rlimits per process, and the
    manifest's annotation and deploy/README.md name that gap in the same words."""
    from tools_app import cgroups, sandbox

    worker = named(objects, "Deployment", "voice-worker")
    pod = worker["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    declared = pod["metadata"]["annotations"]["voiceplatform.io/tool-limits"]
    config = named(objects, "ConfigMap", container["envFrom"][0]["configMapRef"]["name"])["data"]
    for name, value in config.items():
        if name.startswith("TOOL_BASH_") and name.endswith(("_BYTES", "_PROCESSES")):
            setattr(settings, name, int(value))
    monkeypatch.setattr(cgroups, "backend", lambda: None)

    line = sandbox.describe_limits()

    assert not container["securityContext"].get("privileged")
    assert "TOOL_BASH_CGROUP_PARENT" not in config
    assert line.startswith(declared), (line, declared)
    assert declared in " ".join((ROOT / "deploy/README.md").read_text().split())


def test_cookie_less_clients_are_hashed_on_their_session_header_beside_each_pinned_route(
    objects,
):
    ingresses = of_kind(objects, "Ingress")
    annotations = "nginx.ingress.kubernetes.io/"

    def routes(ingress):
        return {
            (rule["host"], path["path"])
            for rule in ingress["spec"]["rules"]
            for path in rule["http"]["paths"]
        }

    pinned = [i for i in ingresses if i["metadata"]["annotations"].get(f"{annotations}affinity")]
    hashed = [i for i in ingresses if i["metadata"]["annotations"].get(f"{annotations}canary")]

    assert {r for i in pinned for r in routes(i)} == {r for i in hashed for r in routes(i)}
    for ingress in hashed:
        a = ingress["metadata"]["annotations"]
        assert a[f"{annotations}canary-by-header"] == "X-Voice-Session-Id"
        assert a[f"{annotations}upstream-hash-by"] == "$http_x_voice_session_id"
        (backend,) = {
            p["backend"]["service"]["name"] for p in ingress["spec"]["rules"][0]["http"]["paths"]
        }
        service = named(objects, "Service", backend)
        assert service["spec"]["selector"] == {"app.kubernetes.io/component": "web"}
