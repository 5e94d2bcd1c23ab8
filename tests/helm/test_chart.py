"""The Helm chart ``helm/vfq``, checked with the real Helm engine (helm-sdkpy: Helm 4 as a library).

* ``helm lint`` (which renders every template against the chart's values.yaml and checks it against
  values.schema.json) is clean, with no warning, for each deployment variant;
* each variant is rendered by a real ``helm install`` against a stub of the Kubernetes API
  (:mod:`fake_kube_api`; helm-sdkpy has no ``helm template``), and the objects Helm sends are checked:
  against the API schemas of the oldest and the newest Kubernetes the chart is meant for
  (kubernetes-validate, strict: a misspelt or misplaced field fails, as the API server would refuse
  it), and for what each variant must contain;
* values the schema or the chart's own rules refuse make the install fail.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_sdkpy  # installed by `make setup` (pip --ignore-requires-python, see the Makefile)
import kubernetes_validate
import pytest
import yaml
from fake_kube_api import FakeKubeApi

from vfq import __version__
from vfq.server import NGC_RELEASE

CHART = Path(__file__).resolve().parents[2] / "helm" / "vfq"
RELEASE = "vfq"
NAMESPACE = "imaging"
SERVICE = f"{RELEASE}.{NAMESPACE}.svc"
# Helm's lint severities (pkg/lint/support).
INFO, WARNING, ERROR = 1, 2, 3
SCHEMA_ERROR = "values don't meet the specifications of the schema"
#: Where the derived image (Dockerfile) links the NGC image's tcmalloc, and what the chart preloads.
IMAGE_TCMALLOC = "/opt/vfq/lib/libtcmalloc.so"
DOCKERFILE = (CHART.parents[1] / "Dockerfile").read_text(encoding="utf-8")

#: The Kubernetes versions whose API every rendered object must satisfy: the oldest the chart accepts
#: (its Chart.yaml ``kubeVersion``, ">=1.27.0-0") and the newest whose schemas the pinned
#: kubernetes-validate carries.
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")
#: Kinds of custom resources, whose schemas come with their operator, not with Kubernetes: the
#: ServiceMonitor (prometheus-operator) is checked by its own test below.
CUSTOM_KINDS = frozenset({"ServiceMonitor"})

#: The deployment variants of the chart README, as values given to `helm install`.
VARIANTS: dict[str, dict[str, Any]] = {
    "gpu": {},
    "cpu": {"target": "cpu"},
    "pvc": {
        "modelRepository": {"source": "pvc", "pvc": {"claimName": "vfq-models", "subPath": "gpu"}},
        "planCache": {"existingClaim": "vfq-plans-h100"},
    },
    "s3": {
        "modelRepository": {
            "source": "objectStore",
            "objectStore": {
                "url": "s3://vfq-models/24.10/h100",
                "credentialsSecret": "vfq-s3",
                "region": "eu-central-1",
            },
        }
    },
    "gcs": {
        "modelRepository": {
            "source": "objectStore",
            "objectStore": {"url": "gs://vfq-models/24.10/l4", "credentialsSecret": "vfq-gcs"},
        }
    },
    "tls": {"tls": {"enabled": True, "secretName": "vfq-grpc-tls", "mutual": True}},
    "autoscaling": {
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
        "networkPolicy": {
            "clients": {
                "pacs-router": {
                    "podSelector": {"matchLabels": {"app.kubernetes.io/name": "pacs-router"}},
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "pacs"}},
                },
                "worklist": {"namespaceSelector": {"matchLabels": {"team": "worklist"}}},
            }
        },
    },
    "http": {
        "server": {
            "http": {"enabled": True},
            "trace": {"level": "TIMESTAMPS", "rate": 100},
            "allocator": "system",
        },
        "image": {"digest": "sha256:" + "ab" * 32},
    },
}


@dataclass(frozen=True)
class Rendered:
    """What one `helm install` produced: the objects sent to the API, the hooks Helm kept, the release."""

    objects: list[dict[str, Any]]
    hooks: list[dict[str, Any]]
    release: dict[str, Any]

    def one(self, kind: str) -> dict[str, Any]:
        found = [o for o in self.objects if o["kind"] == kind]
        assert len(found) == 1, f"{len(found)} {kind} objects"
        return found[0]

    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}

    @property
    def pod(self) -> dict[str, Any]:
        return self.one("Deployment")["spec"]["template"]["spec"]

    @property
    def server(self) -> dict[str, Any]:
        (container,) = [c for c in self.pod["containers"] if c["name"] == "tritonserver"]
        return container

    def env(self) -> dict[str, dict[str, Any]]:
        return {e["name"]: e for e in self.server.get("env", [])}


@pytest.fixture(scope="module")
def kube_api():
    # Every Helm call gets this stub's kubeconfig explicitly: no real cluster or kubeconfig is read.
    # (Helm's Go runtime sees the environment the process started with, not later changes.)
    with FakeKubeApi() as api:
        yield api


def install(api: FakeKubeApi, values: dict[str, Any]) -> Rendered:
    config = helm_sdkpy.Configuration(namespace=NAMESPACE, kubeconfig=api.kubeconfig)
    api.take()
    release = asyncio.run(
        helm_sdkpy.Install(config).run(RELEASE, str(CHART), values=values or None, wait=False, timeout=60)
    )
    return Rendered(api.take(), release.get("hooks") or [], release)


@pytest.fixture(scope="module")
def defaults(kube_api) -> dict[str, Any]:
    """The chart's values.yaml, as Helm read it."""
    return install(kube_api, {}).release["chart"]["values"]


@pytest.fixture(scope="module")
def rendered(kube_api) -> dict[str, Rendered]:
    return {name: install(kube_api, values) for name, values in VARIANTS.items()}


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = (
            merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def lint(api: FakeKubeApi, chart: Path) -> dict[str, Any]:
    config = helm_sdkpy.Configuration(namespace=NAMESPACE, kubeconfig=api.kubeconfig)
    return asyncio.run(helm_sdkpy.Lint(config).run(str(chart)))


def chart_with_values(tmp_path: Path, values: dict[str, Any]) -> Path:
    """A copy of the chart whose values.yaml is ``values`` (JSON is YAML): lint reads only values.yaml."""
    chart = tmp_path / "vfq"
    shutil.copytree(CHART, chart)
    (chart / "values.yaml").write_text(json.dumps(values), encoding="utf-8")
    return chart


# --- lint -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_lint_is_clean_for_every_variant(kube_api, defaults, tmp_path, variant):
    result = lint(kube_api, chart_with_values(tmp_path, merged(defaults, VARIANTS[variant])))
    assert result["TotalChartsLinted"] == 1
    assert result["Errors"] is None
    # `helm lint --strict` passes: nothing above INFO (the one INFO: Chart.yaml has no icon).
    assert [m for m in result["Messages"] if m["Severity"] >= WARNING] == []


def test_lint_of_the_chart_as_shipped_is_clean(kube_api):
    result = lint(kube_api, CHART)
    assert result["Errors"] is None
    assert [m["Path"] for m in result["Messages"] if m["Severity"] >= WARNING] == []


def test_lint_reports_values_the_schema_refuses(kube_api, defaults, tmp_path):
    result = lint(kube_api, chart_with_values(tmp_path, merged(defaults, {"replicaCount": "two"})))
    assert {m["Path"] for m in result["Messages"] if m["Severity"] == ERROR} >= {"values.yaml"}


def test_the_schema_closes_every_object_with_fixed_keys():
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    open_objects = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
                and node.get("additionalProperties") is not False
            ):
                open_objects.append(path)
            for key, child in node.items():
                visit(child, f"{path}/{key}")
        elif isinstance(node, list):
            for index, child in enumerate(node):
                visit(child, f"{path}[{index}]")

    visit(schema, "")
    assert open_objects == []
    trace_levels = schema["properties"]["server"]["properties"]["trace"]["properties"]["level"]["enum"]
    assert trace_levels == ["OFF", "TIMESTAMPS"]
    sources = schema["properties"]["modelRepository"]["properties"]["source"]["enum"]
    assert sources == ["image", "pvc", "objectStore"]


# --- values that must fail the install --------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": "two"}, SCHEMA_ERROR),
        ({"replicas": 2}, SCHEMA_ERROR),  # unknown key
        ({"image": {"tagg": "latest"}}, SCHEMA_ERROR),  # a typo one level down
        ({"image": {"digest": "sha256:123"}}, SCHEMA_ERROR),
        ({"server": {"trace": {"level": "TENSORS"}}}, SCHEMA_ERROR),
        ({"server": {"http": {"enabled": "yes"}}}, SCHEMA_ERROR),
        ({"server": {"allocator": "jemalloc"}}, SCHEMA_ERROR),
        ({"target": "tpu"}, SCHEMA_ERROR),
        ({"modelRepository": {"source": "nfs"}}, SCHEMA_ERROR),
        ({"modelRepository": {"source": "pvc"}}, SCHEMA_ERROR),  # no claim
        ({"modelRepository": {"source": "objectStore"}}, SCHEMA_ERROR),  # no URL
        ({"modelRepository": {"source": "objectStore", "objectStore": {"url": "https://x/y"}}}, SCHEMA_ERROR),
        ({"tls": {"enabled": True}}, SCHEMA_ERROR),  # no Secret
        ({"networkPolicy": {"clients": {"pacs": {}}}}, SCHEMA_ERROR),  # a rule without a selector
        ({"resources": {"limits": {"nvidia.com/gpu": 2}}}, SCHEMA_ERROR),  # GPUs come from gpu.count
        ({"server": {"extraArgs": ["--model-control-mode=explicit"]}}, "set by the chart"),
        ({"probes": {"startup": {"periodSeconds": 10, "failureThreshold": 30}}}, "at least 1200"),
        ({"tls": {"mutual": True}}, "tls.mutual needs tls.enabled"),
        ({"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 2}}, "maxReplicas"),
        ({"tls": {"enabled": True, "secretName": "t"}, "server": {"http": {"enabled": True}}}, "plaintext"),
        ({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}, "cannot both be 0"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
def test_values_the_chart_refuses_fail_the_install(kube_api, values, message):
    with pytest.raises(helm_sdkpy.InstallError, match="install failed") as failure:
        install(kube_api, values)
    assert message in str(failure.value)


# --- what every variant renders ---------------------------------------------------------------------


def test_the_oldest_kubernetes_version_checked_is_the_charts_own_lower_bound():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["kubeVersion"] == f">={KUBERNETES_VERSIONS[0]}-0"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_object_is_valid_for_the_kubernetes_api_of_each_version(rendered, variant):
    release = rendered[variant]
    objects = release.objects + [yaml.safe_load(hook["manifest"]) for hook in release.hooks]
    checked = [o for o in objects if o["kind"] not in CUSTOM_KINDS]
    assert {"Deployment", "Service", "Pod"} <= {o["kind"] for o in checked}  # the helm test pod too
    for version in KUBERNETES_VERSIONS:
        for obj in checked:
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_api_check_refuses_a_misspelt_or_mistyped_field(rendered):
    deployment = copy.deepcopy(rendered["gpu"].one("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["periodSecond"] = 5
    with pytest.raises(kubernetes_validate.ValidationError, match="periodSecond"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    del container["readinessProbe"]["periodSecond"]
    container["ports"][0]["containerPort"] = "8001"
    with pytest.raises(kubernetes_validate.ValidationError, match="'8001' is not of type 'integer'"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_the_chart_is_the_vfq_release_on_the_pinned_ngc_image(rendered):
    release = rendered["gpu"].release
    metadata = release["chart"]["metadata"]
    assert (metadata["apiVersion"], metadata["appVersion"]) == ("v2", __version__)
    assert rendered["gpu"].server["image"] == f"vfq-triton:{__version__}-{NGC_RELEASE}"
    assert rendered["http"].server["image"] == "vfq-triton@sha256:" + "ab" * 32


@pytest.mark.parametrize("variant", VARIANTS)
def test_triton_runs_with_fixed_ports_no_model_control_and_restricted_admin_protocols(rendered, variant):
    server = rendered[variant].server
    args = server["args"]
    assert server["command"] == ["tritonserver"]
    for flag in (
        "--model-control-mode=none",
        "--strict-readiness=true",
        "--exit-timeout-secs=30",
        "--grpc-port=8001",
        "--http-port=8000",
        "--metrics-port=8002",
        "--allow-metrics=true",
        "--grpc-restricted-protocol=model-repository,model-config,shared-memory,statistics,trace,logging:"
        "vfq-admin-key=$(VFQ_ADMIN_KEY)",
    ):
        assert flag in args
    http = variant == "http"
    assert f"--allow-http={str(http).lower()}" in args
    assert any(a.startswith("--http-restricted-api=model-repository,") for a in args) is http
    assert "TENSORS" not in json.dumps(rendered[variant].objects)
    assert [a for a in args if a.startswith("--model-repository=")] == [
        f"--model-repository={served_repository(variant)}"
    ]


def served_repository(variant: str) -> str:
    return {
        "cpu": "/opt/vfq/model_repository_cpu",
        "s3": "s3://vfq-models/24.10/h100",
        "gcs": "gs://vfq-models/24.10/l4",
    }.get(variant, "/plan-cache/model_repository")


def test_tracing_is_off_by_default_and_timestamps_only_when_asked(rendered):
    assert not any(a.startswith("--trace-config") for a in rendered["gpu"].server["args"])
    traced = [a for a in rendered["http"].server["args"] if a.startswith("--trace-config")]
    assert "--trace-config=level=TIMESTAMPS" in traced
    assert "--trace-config=rate=100" in traced


@pytest.mark.parametrize("variant", VARIANTS)
def test_secrets_are_referenced_never_rendered(rendered, variant):
    objects = rendered[variant].objects
    assert not {"Secret", "ConfigMap"} & rendered[variant].kinds()
    env = rendered[variant].env()
    assert env["VFQ_ADMIN_KEY"] == {
        "name": "VFQ_ADMIN_KEY",
        "valueFrom": {"secretKeyRef": {"name": "vfq-admin-key", "key": "key"}},
    }
    for name, entry in env.items():
        if name.startswith("AWS_") and name != "AWS_DEFAULT_REGION":
            assert "value" not in entry and entry["valueFrom"]["secretKeyRef"]["name"] == "vfq-s3"
    assert "$(VFQ_ADMIN_KEY)" in json.dumps(objects)


def test_object_store_credentials_come_from_the_named_secret(rendered):
    s3 = rendered["s3"].env()
    assert s3["AWS_DEFAULT_REGION"]["value"] == "eu-central-1"
    assert s3["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
        "name": "vfq-s3",
        "key": "AWS_ACCESS_KEY_ID",
    }
    assert s3["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    gcs = rendered["gcs"]
    assert gcs.env()["GOOGLE_APPLICATION_CREDENTIALS"]["value"] == (
        "/var/run/secrets/vfq/object-store/credentials.json"
    )
    (volume,) = [v for v in gcs.pod["volumes"] if v["name"] == "object-store-credentials"]
    assert volume["secret"]["secretName"] == "vfq-gcs"
    assert not any(n.startswith("AWS_") for n in gcs.env())


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_container_runs_locked_down(rendered, variant):
    pod = rendered[variant].pod
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for container in pod["containers"] + pod.get("initContainers", []):
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == 1000
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert rendered[variant].one("ServiceAccount")["automountServiceAccountToken"] is False


@pytest.mark.parametrize("variant", VARIANTS)
def test_only_scratch_volumes_are_writable(rendered, variant):
    pod = rendered[variant].pod
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "4Gi"}
    mounts = {m["mountPath"]: m for m in rendered[variant].server["volumeMounts"]}
    assert mounts["/dev/shm"]["name"] == "dshm" and mounts["/tmp"]["name"] == "tmp"
    writable = {path for path, m in mounts.items() if not m.get("readOnly")}
    assert writable == {"/dev/shm", "/tmp"}
    for init in pod.get("initContainers", []):
        writable = {m["mountPath"] for m in init["volumeMounts"] if not m.get("readOnly")}
        assert writable == {"/tmp", "/plan-cache"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_plans_are_built_in_init_containers_only_for_onnx_repositories_on_the_gpu(rendered, variant):
    pod = rendered[variant].pod
    inits = pod.get("initContainers", [])
    if variant in ("cpu", "s3", "gcs"):
        assert inits == []
        assert "plan-cache" not in {v["name"] for v in pod["volumes"]}
        return
    build, check = inits
    source = "/models" if variant == "pvc" else "/opt/vfq/model_repository"
    assert build["command"] == [
        "timeout",
        "3600",
        "vfq-repository",
        "build-plans",
        "--source",
        source,
        "--out",
        "/plan-cache/model_repository",
        "--precision",
        "fp16",
        "--timing-cache",
        "/plan-cache/timing.cache",
        "--builder",
        "api",
    ]
    assert check["command"] == [
        "vfq-repository",
        "check-plans",
        "--repository",
        "/plan-cache/model_repository",
    ]
    assert build["image"] == check["image"] == rendered[variant].server["image"]
    assert build["resources"]["limits"]["nvidia.com/gpu"] == 1
    (cache,) = [v for v in pod["volumes"] if v["name"] == "plan-cache"]
    if variant == "pvc":
        assert cache == {"name": "plan-cache", "persistentVolumeClaim": {"claimName": "vfq-plans-h100"}}
    else:
        assert cache == {"name": "plan-cache", "emptyDir": {"sizeLimit": "4Gi"}}


def test_the_plan_builder_is_one_that_vfq_repository_offers(kube_api):
    from vfq.export.repository import PLAN_BUILDERS

    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    assert tuple(schema["properties"]["planBuild"]["properties"]["builder"]["enum"]) == PLAN_BUILDERS
    (build, _) = install(kube_api, {"planBuild": {"builder": "trtexec"}}).pod["initContainers"]
    assert build["command"][-2:] == ["--builder", "trtexec"]


def test_a_pvc_repository_is_mounted_read_only(rendered):
    pvc = rendered["pvc"]
    (volume,) = [v for v in pvc.pod["volumes"] if v["name"] == "model-repository"]
    assert volume["persistentVolumeClaim"] == {"claimName": "vfq-models", "readOnly": True}
    for container in pvc.pod["containers"][:1] + pvc.pod["initContainers"][:1]:
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "model-repository"]
        assert mount == {
            "name": "model-repository",
            "mountPath": "/models",
            "readOnly": True,
            "subPath": "gpu",
        }


@pytest.mark.parametrize("variant", VARIANTS)
def test_gpus_are_requested_on_the_gpu_target_only(rendered, variant):
    pod = rendered[variant].pod
    cpu = variant == "cpu"
    for container in pod["containers"] + pod.get("initContainers", []):
        limits = container["resources"]["limits"]
        assert limits.get("nvidia.com/gpu") == (None if cpu else 1)
        assert container["resources"]["requests"] == {"cpu": "4", "memory": "12Gi"}
        assert limits["memory"] == "16Gi"
    assert ("NVIDIA_VISIBLE_DEVICES" in rendered[variant].env()) is cpu
    assert (f"--allow-gpu-metrics={str(not cpu).lower()}") in rendered[variant].server["args"]
    # The CUDA pool holds the largest tensors between steps (two localizer grids at the profile maximum).
    assert ("--cuda-memory-pool-byte-size=0:402653184" in rendered[variant].server["args"]) is not cpu
    gpu_toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert (gpu_toleration in pod.get("tolerations", [])) is not cpu


@pytest.mark.parametrize("variant", VARIANTS)
def test_triton_runs_on_the_images_tcmalloc_unless_told_otherwise(rendered, variant):
    preload = rendered[variant].env().get("LD_PRELOAD")
    if variant == "http":  # server.allocator: system
        assert preload is None
    else:
        assert preload == {"name": "LD_PRELOAD", "value": IMAGE_TCMALLOC}
        assert f'ln -s "/usr/lib/$(uname -m)-linux-gnu/libtcmalloc.so.4" {IMAGE_TCMALLOC}' in DOCKERFILE
    for container in rendered[variant].pod.get("initContainers", []):  # the plan builder: no preload
        assert "LD_PRELOAD" not in {e["name"] for e in container.get("env", [])}


def health_command(tls: bool = False) -> list[str]:
    command = ["vfq-health", "--url", "127.0.0.1:8001", "--model", "vertebra_pipeline", "--timeout", "3"]
    if tls:
        command += ["--ssl", "--root-certificates", "/etc/vfq/grpc-tls/ca.crt", "--ssl-target-name", SERVICE]
        command += ["--private-key", "/etc/vfq/grpc-tls/tls.key"]
        command += ["--certificate-chain", "/etc/vfq/grpc-tls/tls.crt"]
    return command


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_wait_for_the_pipeline_model(rendered, variant):
    server = rendered[variant].server
    startup, readiness, liveness = server["startupProbe"], server["readinessProbe"], server["livenessProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20 * 60
    if variant == "http":
        assert startup["httpGet"] == {"path": "/v2/models/vertebra_pipeline/ready", "port": "http"}
        assert readiness["httpGet"] == {"path": "/v2/models/vertebra_pipeline/ready", "port": "http"}
        assert liveness["httpGet"] == {"path": "/v2/health/live", "port": "http"}
        return
    tls = variant == "tls"
    assert startup["exec"]["command"] == health_command(tls)
    assert readiness["exec"]["command"] == health_command(tls)
    if tls:  # the kubelet's gRPC probe cannot speak TLS
        assert liveness["exec"]["command"] == health_command(tls=True)
    else:  # grpc.health.v1, which Triton answers
        assert liveness["grpc"] == {"port": 8001}


def test_updates_start_a_new_pod_before_stopping_an_old_one_unless_told_otherwise(kube_api, rendered):
    strategy = rendered["gpu"].one("Deployment")["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    fixed_pool = install(kube_api, {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}})
    assert fixed_pool.one("Deployment")["spec"]["strategy"]["rollingUpdate"] == {
        "maxSurge": 0,
        "maxUnavailable": 1,
    }


def test_the_install_notes_say_how_to_call_the_server(rendered):
    notes = rendered["gpu"].release["info"]["notes"]
    assert f"kubectl -n {NAMESPACE} port-forward svc/{RELEASE} 8001:8001" in notes
    assert "vfq analyze scans/* --url 127.0.0.1:8001 --out results" in notes
    assert f"clients call gRPC at {SERVICE}:8001" in notes
    assert "shared memory" in notes and "admits no client yet" in notes
    assert f"helm test -n {NAMESPACE} {RELEASE}" in notes
    assert (
        "Admitted by the NetworkPolicy: pacs-router, worklist."
        in rendered["autoscaling"].release["info"]["notes"]
    )
    tls_notes = rendered["tls"].release["info"]["notes"]
    assert f"helm test -n {NAMESPACE} {RELEASE}" in tls_notes
    assert (
        "vfq analyze scans/* --url 127.0.0.1:8001 --out results \\\n"
        f"    --ssl --root-certificates ca.crt --ssl-target-name {SERVICE} \\\n"
        "    --private-key client.key --certificate-chain client.crt\n"
    ) in tls_notes


def test_termination_waits_for_in_flight_requests(kube_api, rendered):
    pod = rendered["gpu"].pod
    assert pod["terminationGracePeriodSeconds"] == 5 + 30 + 10
    assert rendered["gpu"].server["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    slow = install(kube_api, {"server": {"exitTimeoutSeconds": 120}})
    assert slow.pod["terminationGracePeriodSeconds"] == 5 + 120 + 10
    assert "--exit-timeout-secs=120" in slow.server["args"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_service_exposes_grpc_and_metrics_and_http_only_when_on(rendered, variant):
    service = rendered[variant].one("Service")["spec"]
    ports = {p["name"]: p["port"] for p in service["ports"]}
    expected = {"grpc": 8001, "metrics": 8002} | ({"http": 8000} if variant == "http" else {})
    assert ports == expected
    assert service["type"] == "ClusterIP"
    deployment = rendered[variant].one("Deployment")["spec"]
    assert service["selector"] == deployment["selector"]["matchLabels"]
    assert (
        deployment["selector"]["matchLabels"].items() <= deployment["template"]["metadata"]["labels"].items()
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_network_policy_admits_named_clients_to_grpc_and_monitoring_to_metrics(rendered, variant):
    policy = rendered[variant].one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    assert policy["podSelector"] == rendered[variant].one("Deployment")["spec"]["selector"]
    clients, monitoring = policy["ingress"]
    client_ports = {p["port"] for p in clients["ports"]}
    assert client_ports == ({"grpc", "http"} if variant == "http" else {"grpc"})
    helm_test = clients["from"][0]["podSelector"]["matchLabels"]
    assert helm_test["app.kubernetes.io/component"] == "helm-test"
    named = clients["from"][1:]
    if variant == "autoscaling":
        assert named == [
            {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "pacs-router"}},
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "pacs"}},
            },
            {"namespaceSelector": {"matchLabels": {"team": "worklist"}}},
        ]
    else:
        assert named == []  # nobody but the helm test until clients are named
    assert monitoring["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert monitoring["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {},
        }
    ]


def test_the_disruption_budget_lets_a_single_replica_drain(rendered):
    budget = rendered["gpu"].one("PodDisruptionBudget")
    assert budget["apiVersion"] == "policy/v1"
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == rendered["gpu"].one("Deployment")["spec"]["selector"]


def test_autoscaling_follows_the_queue_time_of_the_pods(rendered):
    scaled = rendered["autoscaling"]
    hpa = scaled.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": RELEASE}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 6)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "vfq_queue_duration_us_per_request"},
                "target": {"type": "AverageValue", "averageValue": "100000"},
            },
        }
    ]
    assert "replicas" not in scaled.one("Deployment")["spec"]
    assert rendered["gpu"].one("Deployment")["spec"]["replicas"] == 1
    assert "HorizontalPodAutoscaler" not in rendered["gpu"].kinds()
    monitor = scaled.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert "ServiceMonitor" not in rendered["gpu"].kinds()


#: The GPU check's record of served step times on an H100 (8 instances of each python step).
GPU_RECORD = CHART.parents[1] / "benchmarks" / "results" / "gpu_check_h100_final.json"


def test_the_default_queue_target_is_reached_before_bounded_queues_refuse(defaults, tmp_path):
    """With the queues bounded as the README suggests (8), the queue time per CT levels off under
    overload near Σ max_queue_size × step time ÷ instances; a target above that level would see
    refusals, never a reason to scale out."""
    from vfq.export.repository import load_config, write_repository
    from vfq.tensors import PIPELINE_STEPS

    steps = json.loads(GPU_RECORD.read_text(encoding="utf-8"))["triton 8:1:cuda"]["server_steps"]
    repository = write_repository("gpu", tmp_path / "gpu", step_instances=8, max_queue_size=8)
    level_s = 0.0
    for step in PIPELINE_STEPS:
        config = load_config(repository / step / "config.pbtxt")
        waiting = config.dynamic_batching.default_queue_policy.max_queue_size
        level_s += waiting * steps[step]["compute_s"] / config.instance_group[0].count
    assert 0.25 < level_s < 0.4  # about 0.32 s, as the chart's README says
    assert defaults["autoscaling"]["targetQueueMicroseconds"] * 1e-6 <= level_s / 2


def test_grpc_tls_comes_from_the_named_secret(rendered):
    tls = rendered["tls"]
    args = tls.server["args"]
    for flag in (
        "--grpc-use-ssl=true",
        "--grpc-use-ssl-mutual=true",
        "--grpc-server-cert=/etc/vfq/grpc-tls/tls.crt",
        "--grpc-server-key=/etc/vfq/grpc-tls/tls.key",
        "--grpc-root-cert=/etc/vfq/grpc-tls/ca.crt",
    ):
        assert flag in args
    (volume,) = [v for v in tls.pod["volumes"] if v["name"] == "grpc-tls"]
    assert volume["secret"]["secretName"] == "vfq-grpc-tls"
    assert not any(a.startswith("--grpc-use-ssl") for a in rendered["gpu"].server["args"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_test_sends_a_phantom_through_the_pipeline(rendered, variant):
    (hook,) = rendered[variant].hooks
    assert (hook["kind"], hook["events"]) == ("Pod", ["test"])
    manifest = hook["manifest"]
    assert "vfq-phantom --seed 7 --out /tmp/p --dicom\n" in manifest
    analyze = f"vfq analyze /tmp/p/dicom --url {SERVICE}:8001 --out /tmp/r --wait 120"
    tls = variant == "tls"  # the same TLS options as the probes' vfq-health, from the mounted Secret
    tls_options = health_command(tls=True)[len(health_command()) :]
    assert f"{analyze} {' '.join(tls_options)}\n" in manifest if tls else f"{analyze}\n" in manifest
    assert ("secretName: vfq-grpc-tls" in manifest) is tls
    assert ("mountPath: /etc/vfq/grpc-tls" in manifest) is tls
    assert "app.kubernetes.io/component: helm-test" in manifest
    for setting in (
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "automountServiceAccountToken: false",
    ):
        assert setting in manifest
    assert "nvidia.com/gpu" not in manifest


def test_the_chart_readme_documents_the_adapter_rule_for_the_autoscaler_metric(defaults):
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    metric = defaults["autoscaling"]["metricName"]
    assert f'as: "{metric}"' in readme
    for name in ("nv_inference_queue_duration_us", "nv_inference_request_success"):
        assert name in readme
