"""A stand-in for the Kubernetes API server, just enough for the real Helm engine to install a chart.

helm-sdkpy (Helm 4 as a shared library) has no ``helm template`` and no client-only or dry-run install:
every install first asks a cluster for its version and API groups. This server answers those
(discovery for the kinds the chart uses), says 404 to every object lookup, lists nothing, and echoes
every create or update back as accepted. The objects Helm sends are the chart's rendered manifests,
already parsed and converted to JSON by Helm itself; :attr:`FakeKubeApi.created` keeps them.

Nothing here is a Kubernetes validator: the API server's own checks (OpenAPI, admission) do not run.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: The Kubernetes version the stub reports (the chart's kubeVersion must accept it).
KUBE_VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "platform": "linux/amd64"}

#: Resources the stub advertises: group/version -> (plural, kind, namespaced).
API_RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("pods", "Pod", True),
        ("services", "Service", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("secrets", "Secret", True),
        ("configmaps", "ConfigMap", True),
        ("persistentvolumeclaims", "PersistentVolumeClaim", True),
        ("namespaces", "Namespace", False),
    ],
    "apps/v1": [("deployments", "Deployment", True)],
    "autoscaling/v2": [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "networking.k8s.io/v1": [("networkpolicies", "NetworkPolicy", True)],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True)],
}

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


def _resource_list(group_version: str) -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {"name": plural, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": VERBS}
            for plural, kind, namespaced in API_RESOURCES[group_version]
        ],
    }


def _group_list() -> dict[str, Any]:
    groups = []
    for group_version in API_RESOURCES:
        if "/" in group_version:
            name, version = group_version.split("/")
            entry = {"groupVersion": group_version, "version": version}
            groups.append({"name": name, "versions": [entry], "preferredVersion": entry})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


class FakeKubeApi:
    """The stub on a free loopback port, for use as a context manager; :attr:`kubeconfig` points at it."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def kubeconfig(self) -> str:
        """A kubeconfig (YAML text) whose only cluster is this stub."""
        host, port = self._server.server_address[:2]
        return (
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: stub\n  cluster:\n    server: http://{host}:{port}\n"
            "users:\n- name: stub\n  user:\n    token: stub\n"
            "contexts:\n- name: stub\n  context:\n    cluster: stub\n    user: stub\n"
            "current-context: stub\n"
        )

    def take(self) -> list[dict[str, Any]]:
        """The objects created since the last call (JSON bodies only: Helm's own release record, when
        stored as a protobuf Secret, is not among them)."""
        with self._lock:
            objects, self.created = self.created, []
        return objects

    def __enter__(self) -> FakeKubeApi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _json(self, code: int, payload: dict[str, Any]) -> None:
                self._send(code, json.dumps(payload).encode())

            def do_GET(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                if path == "/version":
                    return self._json(200, KUBE_VERSION)
                if path == "/api":
                    return self._json(200, {"kind": "APIVersions", "versions": ["v1"]})
                if path == "/apis":
                    return self._json(200, _group_list())
                for group_version in API_RESOURCES:
                    prefix = "/api/" if group_version == "v1" else "/apis/"
                    if path == prefix + group_version:
                        return self._json(200, _resource_list(group_version))
                parts = path.strip("/").split("/")
                rest = parts[2:] if parts[0] == "api" else parts[3:]
                if len(rest) in (1, 3):  # a collection: <plural> or namespaces/<ns>/<plural>
                    return self._json(
                        200,
                        {
                            "kind": "List",
                            "apiVersion": "v1",
                            "metadata": {"resourceVersion": "1"},
                            "items": [],
                        },
                    )
                return self._json(
                    404,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": "NotFound",
                        "code": 404,
                    },
                )

            def _echo(self, code: int) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                content_type = self.headers.get("Content-Type", "application/json")
                if self.command == "POST" and content_type.startswith("application/json"):
                    with api._lock:
                        api.created.append(json.loads(body))
                self._send(code, body, content_type)

            def do_POST(self) -> None:
                self._echo(201)

            def do_PUT(self) -> None:
                self._echo(200)

        return Handler
