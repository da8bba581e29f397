"""The Helm chart (charts/dynamig): rendered with a real `helm template`, linted with
`helm lint --strict`, every manifest checked with `kubernetes-validate --strict`, and the parts that
the code depends on (scheduler config, RBAC, webhook, device plugin, ConfigMaps) checked one by one.

helm comes from scripts/fetch-helm.sh (installed once at .tools/bin/helm), so a fresh machine works.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "dynamig"
FETCH_HELM = ROOT / "scripts" / "fetch-helm.sh"

RELEASE = "dyn"
NAMESPACE = "dynamig-system"
FULLNAME = f"{RELEASE}-dynamig"
# The cluster version handed to `helm template` (kube-scheduler's tag defaults to it).
HELM_KUBE_VERSION = "1.33.5"
# Schemas of kubernetes-validate to check every manifest against.
VALIDATE_KUBE_VERSIONS = ("1.33.0", "1.37.0")
# Kinds that kubernetes-validate has no schema for (cert-manager CRDs): skipped, any other unknown
# kind fails.
UNKNOWN_KINDS = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate")}

# The Kubernetes permissions each component's code uses: {component: {(apiGroup, resource): verbs}}.
# The chart (templates/_rbac.tpl) must grant exactly these. The lead cross-checks this constant with
# the API calls in kube/, extender/ and deviceplugin/.
EXPECTED_RBAC: dict[str, dict[tuple[str, str], set[str]]] = {
    "extender": {
        ("", "pods"): {"get", "list", "watch", "patch"},
        ("", "pods/binding"): {"create"},
        ("", "nodes"): {"get", "list", "watch", "patch"},
        ("", "namespaces"): {"get"},
        ("coordination.k8s.io", "leases"): {"get", "create", "update"},
    },
    # kube-scheduler's own rules: its leader-election Lease in the release namespace. Everything else
    # comes from the standard roles in EXPECTED_ROLE_REFS.
    "kube-scheduler": {
        ("coordination.k8s.io", "leases"): {"get", "create", "update"},
    },
    "device-plugin": {
        ("", "pods"): {"get", "list", "watch", "patch"},
        ("", "nodes"): {"get", "list", "watch", "patch"},
        ("", "events"): {"create"},
    },
}
# Standard (not chart-made) roles each component is bound to.
EXPECTED_ROLE_REFS: dict[str, set[str]] = {
    "extender": set(),
    "kube-scheduler": {
        "ClusterRole/system:kube-scheduler",
        "ClusterRole/system:volume-scheduler",
        "Role/kube-system/extension-apiserver-authentication-reader",
    },
    "device-plugin": set(),
}
# Which ServiceAccount holds each component's permissions (kube-scheduler and the extender are two
# containers of one pod, so they share one).
COMPONENT_SA = {
    "extender": f"{FULLNAME}-scheduler",
    "kube-scheduler": f"{FULLNAME}-scheduler",
    "device-plugin": f"{FULLNAME}-device-plugin",
}

DEFAULT_RESOURCES = {
    "nvidia.com/gpu",
    "nvidia.com/gpumem",
    "nvidia.com/gpumem-percentage",
    "nvidia.com/gpucores",
}

# Real instance memory (MiB) the chart's default templates must use (HAMi's table otherwise).
REAL_MEMORY = {
    ("A30", "1g.6gb"): 5952,
    ("A30", "2g.12gb"): 11968,
    ("A30", "4g.24gb"): 24000,
    ("A100-SXM4-40GB", "1g.5gb"): 4864,
    ("A100-SXM4-40GB", "2g.10gb"): 9856,
    ("A100-SXM4-40GB", "3g.20gb"): 19968,
    ("A100-SXM4-40GB", "7g.40gb"): 40192,
    ("A100-SXM4-80GB", "1g.10gb"): 9728,
    ("A100-SXM4-80GB", "2g.20gb"): 19968,
    ("A100-SXM4-80GB", "3g.40gb"): 40192,
    ("A100-SXM4-80GB", "7g.80gb"): 80896,
    ("H100-SXM5-80GB", "1g.10gb"): 9984,
    ("H100-SXM5-80GB", "2g.20gb"): 20096,
    ("H100-SXM5-80GB", "3g.40gb"): 40448,
    ("H100-SXM5-80GB", "7g.80gb"): 81152,
    ("H100-SXM5-94GB", "1g.12gb"): 11008,
    ("H100-SXM5-94GB", "2g.24gb"): 22144,
    ("H100-SXM5-94GB", "3g.47gb"): 47488,
    ("H100-SXM5-94GB", "7g.94gb"): 95355,
}

# Keys kube-scheduler's strict decoder accepts (kubescheduler.config.k8s.io/v1).
SCHEDULER_CONFIG_KEYS = {
    "apiVersion", "kind", "parallelism", "leaderElection", "clientConnection", "healthzBindAddress",
    "metricsBindAddress", "enableProfiling", "enableContentionProfiling", "percentageOfNodesToScore",
    "podInitialBackoffSeconds", "podMaxBackoffSeconds", "profiles", "extenders",
    "delayCacheUntilActive",
}
LEADER_ELECTION_KEYS = {
    "leaderElect", "leaseDuration", "renewDeadline", "retryPeriod", "resourceLock", "resourceName",
    "resourceNamespace",
}
EXTENDER_KEYS = {
    "urlPrefix", "filterVerb", "preemptVerb", "prioritizeVerb", "weight", "bindVerb", "enableHTTPS",
    "tlsConfig", "httpTimeout", "nodeCacheCapable", "managedResources", "ignorable",
}

# Value sets rendered by the tests.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    # TLS through cert-manager, legacy metrics, HA scheduler, strict webhook, NVIDIA RuntimeClass.
    "certmanager": {
        "certManager": {"enabled": True},
        "legacyMetrics": True,
        "webhook": {"failurePolicy": "Fail", "excludeNamespaces": ["kube-system", "gpu-operator"]},
        "scheduler": {"replicas": 2, "kubeScheduler": {"image": {"tag": "v1.32.9"}}},
        "imagePullSecrets": [{"name": "registry"}],
        "image": {"repository": "registry.example/dynamig", "tag": "0.1.0-rc1"},
        "devicePlugin": {"runtimeClassName": "nvidia"},
    },
    # Custom scheduler name, resource names and nodeconfig with a mig node; no webhook (plain HTTP),
    # unprivileged plugin, ClusterIP metrics.
    "custom": {
        "schedulerName": "gpu-scheduler",
        "resourceNames": {
            "gpu": "example.com/vgpu",
            "gpumem": "example.com/vgpu-memory",
            "gpumemPercentage": "example.com/vgpu-memory-percentage",
            "gpucores": "example.com/vgpu-cores",
        },
        "nodeConfig": [
            {"name": "gpu-a100-0", "operatingmode": "mig"},
            {"name": "share-0", "operatingmode": "hami-core", "devicesplitcount": 4,
             "devicememoryscaling": 1.5, "filterdevices": {"uuid": [], "index": [3]}},
        ],
        "webhook": {"enabled": False},
        "devicePlugin": {"privileged": False, "nodeSelector": {"nvidia.com/gpu.present": "true"},
                         "devicePluginDir": "/var/lib/k0s/kubelet/device-plugins"},
        "scheduler": {
            "extender": {"port": 9000, "metricsPort": 9100, "weight": 3, "httpTimeout": "10s",
                         "extraArgs": ["--log-level=debug"]},
            "metricsService": {"type": "ClusterIP", "port": 9100},
            "leaseName": "gpu-scheduler-lease",
        },
    },
}


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def values_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("values")
    files = {}
    for name, values in VALUE_SETS.items():
        files[name] = d / f"{name}.yaml"
        files[name].write_text(yaml.safe_dump(values))
    return files


def _template(helm: str, values_file: Path | None = None, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
           "--kube-version", HELM_KUBE_VERSION]
    if values_file is not None:
        cmd += ["-f", str(values_file)]
    cmd += list(extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def rendered(helm: str, values_files: dict[str, Path]) -> dict[str, str]:
    out = {}
    for name, path in values_files.items():
        proc = _template(helm, path)
        assert proc.returncode == 0, f"helm template ({name}) failed:\n{proc.stderr}"
        out[name] = proc.stdout
    return out


@pytest.fixture(scope="session")
def manifests(rendered: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    return {name: [d for d in yaml.safe_load_all(text) if d] for name, text in rendered.items()}


@pytest.fixture(params=list(VALUE_SETS))
def case(request: pytest.FixtureRequest, manifests: dict[str, list[dict[str, Any]]]) -> Case:
    return Case(request.param, manifests[request.param])


class Case:
    """One rendered value set."""

    def __init__(self, name: str, docs: list[dict[str, Any]]) -> None:
        self.name = name
        self.docs = docs
        self.values = _merged_values(VALUE_SETS[name])

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def configmap_file(self, name: str, key: str) -> str:
        return self.one("ConfigMap", f"{FULLNAME}-{name}")["data"][key]

    @property
    def scheduler_pod(self) -> dict[str, Any]:
        return self.one("Deployment", f"{FULLNAME}-scheduler")["spec"]["template"]

    @property
    def plugin_pod(self) -> dict[str, Any]:
        return self.one("DaemonSet", f"{FULLNAME}-device-plugin")["spec"]["template"]

    def container(self, pod: dict[str, Any], name: str) -> dict[str, Any]:
        (c,) = [c for c in pod["spec"]["containers"] if c["name"] == name]
        return c


def _merged_values(overrides: dict[str, Any]) -> dict[str, Any]:
    base = yaml.safe_load((CHART / "values.yaml").read_text())

    def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) and v else v
        return out

    return merge(base, overrides)


def _arg(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# ------------------------------------------------------------------------------- helm and schemas


def test_fetch_helm_is_idempotent_and_real(helm: str) -> None:
    proc = subprocess.run(["bash", str(FETCH_HELM)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    assert proc.stdout.strip() == helm
    assert "downloading" not in proc.stderr  # already installed: nothing fetched
    version = subprocess.run([helm, "version", "--short"], capture_output=True, text=True, timeout=30)
    assert version.stdout.startswith("v3.")


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_helm_lint_strict(helm: str, values_files: dict[str, Path], name: str) -> None:
    proc = subprocess.run(
        [helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE,
         "--kube-version", HELM_KUBE_VERSION, "-f", str(values_files[name])],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("kube_version", VALIDATE_KUBE_VERSIONS)
def test_kubernetes_validate_strict(case: Case, kube_version: str, tmp_path: Path) -> None:
    known = [d for d in case.docs if (d["apiVersion"], d["kind"]) not in UNKNOWN_KINDS]
    skipped = {(d["apiVersion"], d["kind"]) for d in case.docs} - {(d["apiVersion"], d["kind"]) for d in known}
    if case.values["certManager"]["enabled"]:
        assert skipped == UNKNOWN_KINDS
    path = tmp_path / f"{case.name}.yaml"
    path.write_text(yaml.safe_dump_all(known))
    proc = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", kube_version, str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # kubernetes-validate only warns about a kind it has no schema for: treat that as a failure.
    assert "Couldn't find schema" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_every_manifest_is_namespaced_in_the_release_namespace(case: Case) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
                      "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    for d in case.docs:
        ns = d["metadata"].get("namespace")
        if d["kind"] in cluster_scoped:
            assert ns is None, d["metadata"]["name"]
        elif d["kind"] == "RoleBinding" and d["metadata"]["name"].endswith("-auth-reader"):
            assert ns == "kube-system"
        else:
            assert ns == NAMESPACE, (d["kind"], d["metadata"]["name"])


@pytest.mark.parametrize(
    ("set_args", "message"),
    [
        (["--set-json", 'nodeConfig=[{"name":"n1","operatingmode":"mps"}]'], "operatingmode"),
        (["--set-json", 'nodeConfig=[{"operatingmode":"mig"}]'], "name"),
        (["--set", "scheduler.extender.weight=0"], "weight"),
        (["--set", "webhook.failurePolicy=Sometimes"], "failurePolicy"),
        (["--set", "resourceNames.gpumem=gpumem"], "gpumem"),
        (["--set", "scheduler.extender.weigth=2"], "weigth"),
        (["--set-json", "deviceConfig.knownMigGeometries=" + json.dumps(
            [{"models": ["A30"], "allowedGeometries": [[{"name": "1g.6gb", "memory": 5952}]]}])], "count"),
    ],
)
def test_invalid_values_are_rejected(helm: str, set_args: list[str], message: str) -> None:
    proc = _template(helm, None, *set_args)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


# -------------------------------------------------------------------------- scheduler configuration


def test_scheduler_config(case: Case) -> None:
    values = case.values
    cfg = yaml.safe_load(case.configmap_file("scheduler-config", "config.yaml"))
    assert cfg["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert cfg["kind"] == "KubeSchedulerConfiguration"
    assert set(cfg) <= SCHEDULER_CONFIG_KEYS, set(cfg) - SCHEDULER_CONFIG_KEYS
    assert cfg["percentageOfNodesToScore"] == 100

    le = cfg["leaderElection"]
    assert set(le) <= LEADER_ELECTION_KEYS
    assert le["leaderElect"] is True
    assert le["resourceLock"] == "leases"
    assert le["resourceName"] == (values["scheduler"]["leaseName"] or values["schedulerName"])
    assert le["resourceNamespace"] == NAMESPACE

    assert [p["schedulerName"] for p in cfg["profiles"]] == [values["schedulerName"]]

    (ext,) = cfg["extenders"]
    assert set(ext) <= EXTENDER_KEYS, set(ext) - EXTENDER_KEYS
    assert (ext["filterVerb"], ext["prioritizeVerb"], ext["bindVerb"]) == ("filter", "prioritize", "bind")
    assert "preemptVerb" not in ext
    assert isinstance(ext["weight"], int) and ext["weight"] > 0
    assert ext["weight"] == values["scheduler"]["extender"]["weight"]
    assert ext["nodeCacheCapable"] is True
    assert ext["ignorable"] is False
    assert ext["httpTimeout"] == values["scheduler"]["extender"]["httpTimeout"]
    names = [r["name"] for r in ext["managedResources"]]
    assert len(names) == len(set(names)) == 4
    assert set(names) == set(values["resourceNames"].values())
    if case.name != "custom":
        assert set(names) == DEFAULT_RESOURCES
    assert all(r["ignoredByScheduler"] is True for r in ext["managedResources"])
    assert all(set(r) == {"name", "ignoredByScheduler"} for r in ext["managedResources"])

    # The URL is the loopback listener of the extender container of the same pod (plain HTTP: the
    # scheduler verbs never leave the pod); the webhook has its own TLS listener.
    port = values["scheduler"]["extender"].get("schedulerPort", 8888)
    assert ext["urlPrefix"] == f"http://127.0.0.1:{port}"
    assert ext["enableHTTPS"] is False and "tlsConfig" not in ext
    extender = case.container(case.scheduler_pod, "extender")
    assert _arg(extender["command"], "--port") == str(port)
    assert _arg(extender["command"], "--host") == "127.0.0.1"


def test_kube_scheduler_container(case: Case) -> None:
    pod = case.scheduler_pod
    ks = case.container(pod, "kube-scheduler")
    tag = case.values["scheduler"]["kubeScheduler"]["image"]["tag"] or f"v{HELM_KUBE_VERSION}"
    assert ks["image"] == f"registry.k8s.io/kube-scheduler:{tag}"
    assert ks["command"][0] == "kube-scheduler"
    assert "--config=/etc/kube-scheduler/config.yaml" in ks["command"]
    (mount,) = [m for m in ks["volumeMounts"] if m["mountPath"] == "/etc/kube-scheduler"]
    (vol,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert vol["configMap"]["name"] == f"{FULLNAME}-scheduler-config"
    assert pod["spec"]["serviceAccountName"] == f"{FULLNAME}-scheduler"


def test_scheduler_pod_runs_unprivileged(case: Case) -> None:
    pod = case.scheduler_pod
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    for c in pod["spec"]["containers"]:
        sc = c["securityContext"]
        assert sc.get("privileged") is not True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["runAsUser"] != 0
    assert pod["metadata"]["labels"]["dynamig.io/webhook"] == "ignore"


def test_extender_container_contract(case: Case) -> None:
    values = case.values
    pod = case.scheduler_pod
    ext = case.container(pod, "extender")
    args = ext["command"]
    assert args[:2] == ["dynamig", "extender"]
    assert _arg(args, "--store") == "kube"
    assert _arg(args, "--host") == "127.0.0.1"
    assert _arg(args, "--port") == str(values["scheduler"]["extender"].get("schedulerPort", 8888))
    assert _arg(args, "--serve-host") == "0.0.0.0"
    assert _arg(args, "--serve-port") == str(values["scheduler"]["extender"]["port"])
    assert _arg(args, "--metrics-host") == "0.0.0.0"
    assert _arg(args, "--metrics-port") == str(values["scheduler"]["extender"]["metricsPort"])
    assert _arg(args, "--device-config") == "/config/device-config.yaml"
    assert _arg(args, "--scheduler-name") == values["schedulerName"]
    assert ("--legacy-metrics" in args) == bool(values["legacyMetrics"])
    for extra in values["scheduler"]["extender"]["extraArgs"]:
        assert extra in args
    ports = {p["name"]: p["containerPort"] for p in ext["ports"]}
    assert ports["metrics"] == values["scheduler"]["extender"]["metricsPort"]

    mounts = {m["mountPath"]: m["name"] for m in ext["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes[mounts["/config"]]["configMap"]["name"] == f"{FULLNAME}-device-config"
    if values["webhook"]["enabled"]:
        assert _arg(args, "--tls-cert-file") == "/tls/tls.crt"
        assert _arg(args, "--tls-key-file") == "/tls/tls.key"
        assert volumes[mounts["/tls"]]["secret"]["secretName"] == f"{FULLNAME}-tls"
        assert ports["https"] == values["scheduler"]["extender"]["port"]
        scheme = "HTTPS"
    else:
        assert "--tls-cert-file" not in args and "--tls-key-file" not in args
        assert "/tls" not in mounts
        assert ports["http"] == values["scheduler"]["extender"]["port"]
        scheme = "HTTP"
    assert ext["livenessProbe"]["httpGet"] == {
        "path": "/healthz", "port": values["scheduler"]["extender"]["port"], "scheme": scheme}
    assert ext["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = _env(ext)
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_scheduler_pod_restarts_when_its_config_changes(helm: str) -> None:
    def checksums(*args: str) -> dict[str, str]:
        proc = _template(helm, None, "--show-only", "templates/scheduler-deployment.yaml", *args)
        assert proc.returncode == 0, proc.stderr
        return yaml.safe_load(proc.stdout)["spec"]["template"]["metadata"]["annotations"]

    base = checksums()
    assert checksums("--set", "scheduler.extender.weight=2") != base
    assert checksums("--set", "deviceConfig.content=nvidia: {}") != base


# --------------------------------------------------------------------------------------------- RBAC


def _rules_by_component(case: Case) -> dict[str, dict[tuple[str, str], set[str]]]:
    granted: dict[str, dict[tuple[str, str], set[str]]] = {c: {} for c in EXPECTED_RBAC}
    for d in case.all("ClusterRole") + case.all("Role"):
        component = d["metadata"]["labels"]["app.kubernetes.io/component"]
        assert component in granted, d["metadata"]["name"]
        for rule in d["rules"]:
            assert "nonResourceURLs" not in rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    granted[component].setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_rbac_grants_exactly_the_expected_verbs(case: Case) -> None:
    granted = _rules_by_component(case)
    for component, expected in EXPECTED_RBAC.items():
        for key, verbs in granted[component].items():
            assert "*" not in verbs and "*" not in key, (component, key)
            extra = verbs - expected.get(key, set())
            assert not extra, f"{component} is granted {sorted(extra)} on {key}, which its code does not use"
        for key, verbs in expected.items():
            missing = verbs - granted[component].get(key, set())
            assert not missing, f"{component} needs {sorted(missing)} on {key}"


def test_rbac_bindings(case: Case) -> None:
    chart_roles = {f"{d['kind']}/{d['metadata']['name']}" for d in case.all("ClusterRole") + case.all("Role")}
    refs: dict[str, set[str]] = {c: set() for c in EXPECTED_ROLE_REFS}
    for b in case.all("ClusterRoleBinding") + case.all("RoleBinding"):
        component = b["metadata"]["labels"]["app.kubernetes.io/component"]
        ref = f"{b['roleRef']['kind']}/{b['roleRef']['name']}"
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": COMPONENT_SA[component], "namespace": NAMESPACE}]
        if ref in chart_roles:
            role = next(d for d in case.docs if f"{d['kind']}/{d['metadata']['name']}" == ref)
            assert role["metadata"]["labels"]["app.kubernetes.io/component"] == component
            continue
        if b["kind"] == "RoleBinding" and b["roleRef"]["kind"] == "Role":
            ref = f"Role/{b['metadata']['namespace']}/{b['roleRef']['name']}"
        refs[component].add(ref)
    assert refs == EXPECTED_ROLE_REFS
    # Every chart-made role is bound.
    bound = {f"{b['roleRef']['kind']}/{b['roleRef']['name']}"
             for b in case.all("ClusterRoleBinding") + case.all("RoleBinding")}
    assert chart_roles <= bound


def test_kube_scheduler_lease_rule_names_its_lease(case: Case) -> None:
    role = case.one("Role", f"{FULLNAME}-kube-scheduler")
    lease = case.values["scheduler"]["leaseName"] or case.values["schedulerName"]
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named and all(r["resourceNames"] == [lease] for r in named)
    assert {v for r in named for v in r["verbs"]} == {"get", "update"}


def test_service_accounts(case: Case) -> None:
    names = {d["metadata"]["name"] for d in case.all("ServiceAccount")}
    assert names == {f"{FULLNAME}-scheduler", f"{FULLNAME}-device-plugin"}
    assert case.plugin_pod["spec"]["serviceAccountName"] == f"{FULLNAME}-device-plugin"


# ----------------------------------------------------------------------------- webhook and services


def _openssl_verify(ca_pem: bytes, cert_pem: bytes, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "ca.crt").write_bytes(ca_pem)
    (tmp_path / "tls.crt").write_bytes(cert_pem)
    return subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "tls.crt")],
        capture_output=True, text=True, timeout=30,
    )


def tls_secrets(case: Case) -> list[dict[str, Any]]:
    return [s for s in case.all("Secret") if s["metadata"]["name"] == f"{FULLNAME}-tls"]


def test_webhook(case: Case, tmp_path: Path) -> None:
    values = case.values
    hooks = case.all("MutatingWebhookConfiguration")
    if not values["webhook"]["enabled"]:
        assert hooks == []
        assert tls_secrets(case) == [] and case.all("Certificate") == []
        return
    (mwc,) = hooks
    (hook,) = mwc["webhooks"]
    svc = hook["clientConfig"]["service"]
    assert svc["path"] == "/webhook"
    assert svc["name"] == f"{FULLNAME}-extender" and svc["namespace"] == NAMESPACE
    assert svc["port"] == values["scheduler"]["service"]["port"]
    # finding 3: UPDATE is reviewed too, and no user-settable label keeps a pod or namespace away
    assert hook["rules"] == [{"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                              "resources": ["pods"], "scope": "Namespaced"}]
    assert hook["failurePolicy"] == values["webhook"]["failurePolicy"]
    assert hook["sideEffects"] == "None"
    assert "objectSelector" not in hook
    assert hook["namespaceSelector"] == {"matchExpressions": [{
        "key": "kubernetes.io/metadata.name", "operator": "NotIn",
        "values": list(dict.fromkeys([NAMESPACE, *values["webhook"]["excludeNamespaces"]]))}]}

    # The Service routes to the extender's TLS port.
    service = case.one("Service", f"{FULLNAME}-extender")
    (port,) = service["spec"]["ports"]
    assert port["port"] == svc["port"] and port["targetPort"] == "https"
    assert service["spec"]["selector"].items() <= case.scheduler_pod["metadata"]["labels"].items()

    dns = f"{FULLNAME}-extender.{NAMESPACE}.svc"
    if values["certManager"]["enabled"]:
        assert "caBundle" not in hook["clientConfig"]
        cert = case.one("Certificate")
        assert mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
            f"{NAMESPACE}/{cert['metadata']['name']}"
        assert cert["spec"]["secretName"] == f"{FULLNAME}-tls"
        assert dns in cert["spec"]["dnsNames"]
        issuer = case.one("Issuer")
        assert cert["spec"]["issuerRef"] == {
            "name": issuer["metadata"]["name"], "kind": "Issuer", "group": "cert-manager.io"}
        assert tls_secrets(case) == []  # cert-manager writes it
    else:
        assert "annotations" not in mwc["metadata"]
        secret = case.one("Secret", f"{FULLNAME}-tls")
        assert secret["type"] == "kubernetes.io/tls"
        ca = base64.b64decode(hook["clientConfig"]["caBundle"])
        assert ca == base64.b64decode(secret["data"]["ca.crt"])
        crt = base64.b64decode(secret["data"]["tls.crt"])
        assert b"PRIVATE KEY" in base64.b64decode(secret["data"]["tls.key"])
        if shutil.which("openssl"):
            proc = _openssl_verify(ca, crt, tmp_path)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(tmp_path / "tls.crt")],
                                  capture_output=True, text=True, timeout=30).stdout
            assert f"DNS:{dns}" in text


def test_metrics_service(case: Case) -> None:
    ms = case.values["scheduler"]["metricsService"]
    service = case.one("Service", f"{FULLNAME}-metrics")
    (port,) = service["spec"]["ports"]
    assert service["spec"]["type"] == ms["type"]
    assert port["port"] == ms["port"] and port["targetPort"] == "metrics"
    if ms["type"] == "NodePort":
        assert port["nodePort"] == 31993
    else:
        assert "nodePort" not in port
    assert service["spec"]["selector"].items() <= case.scheduler_pod["metadata"]["labels"].items()


# ------------------------------------------------------------------------------------ device plugin


def test_device_plugin_daemonset(case: Case) -> None:
    values = case.values["devicePlugin"]
    pod = case.plugin_pod
    spec = pod["spec"]
    (c,) = spec["containers"]
    args = c["command"]
    assert args[:2] == ["dynamig", "deviceplugin"]
    assert _arg(args, "--node") == "$(NODE_NAME)"
    assert _arg(args, "--backend") == "nvml"
    assert _arg(args, "--device-config") == "/config/device-config.yaml"
    assert _arg(args, "--node-config") == "/config/config.json"
    plugin_dir = values["devicePluginDir"]
    assert _arg(args, "--device-plugin-dir") == plugin_dir

    env = _env(c)
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert "utility" in env["NVIDIA_DRIVER_CAPABILITIES"].split(",")

    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts[plugin_dir]]["hostPath"] == {"path": plugin_dir, "type": "Directory"}
    sources = volumes[mounts["/config"]]["projected"]["sources"]
    assert {s["configMap"]["name"] for s in sources} == {f"{FULLNAME}-device-config", f"{FULLNAME}-nodeconfig"}
    assert {i["path"] for s in sources for i in s["configMap"]["items"]} == {"device-config.yaml", "config.json"}

    assert spec["nodeSelector"] == values["nodeSelector"]
    if case.name == "default":
        assert spec["nodeSelector"] == {"gpu": "on"}
    assert spec.get("tolerations") == values["tolerations"]
    if values["runtimeClassName"]:
        assert spec["runtimeClassName"] == values["runtimeClassName"]
    else:
        assert "runtimeClassName" not in spec
    assert pod["metadata"]["labels"]["dynamig.io/webhook"] == "ignore"

    # Privileged only for nvidia-mig-parted, and only when asked for.
    sc = c["securityContext"]
    assert sc["privileged"] is bool(values["privileged"])
    assert ("NVIDIA_MIG_CONFIG_DEVICES" in env) is bool(values["privileged"])
    if not values["privileged"]:
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    # The device-config checksum rolls the plugins together with the extender.
    assert "checksum/device-config" in pod["metadata"]["annotations"]
    sched_sum = case.scheduler_pod["metadata"]["annotations"]["checksum/device-config"]
    assert pod["metadata"]["annotations"]["checksum/device-config"] == sched_sum


def test_only_the_device_plugin_is_privileged(case: Case) -> None:
    for kind in ("Deployment", "DaemonSet"):
        for d in case.all(kind):
            for c in d["spec"]["template"]["spec"]["containers"]:
                if c.get("securityContext", {}).get("privileged"):
                    assert (kind, c["name"]) == ("DaemonSet", "device-plugin")


# ------------------------------------------------------------------------------------- ConfigMaps


def test_nodeconfig(case: Case) -> None:
    doc = json.loads(case.configmap_file("nodeconfig", "config.json"))
    assert doc == {"nodeconfig": case.values["nodeConfig"]}
    if case.name == "custom":
        modes = {e["name"]: e["operatingmode"] for e in doc["nodeconfig"]}
        assert modes == {"gpu-a100-0": "mig", "share-0": "hami-core"}
        assert doc["nodeconfig"][1]["devicesplitcount"] == 4


def _device_config(case: Case) -> dict[str, Any]:
    return yaml.safe_load(case.configmap_file("device-config", "device-config.yaml"))


def test_device_config_format(case: Case) -> None:
    nvidia = _device_config(case)["nvidia"]
    names = case.values["resourceNames"]
    assert nvidia["resourceCountName"] == names["gpu"]
    assert nvidia["resourceMemoryName"] == names["gpumem"]
    assert nvidia["resourceMemoryPercentageName"] == names["gpumemPercentage"]
    assert nvidia["resourceCoreName"] == names["gpucores"]
    groups = nvidia["knownMigGeometries"]
    assert groups == case.values["deviceConfig"]["knownMigGeometries"]
    for group in groups:
        assert set(group) == {"models", "allowedGeometries"}
        assert group["models"] and all(isinstance(m, str) for m in group["models"])
        for geometry in group["allowedGeometries"]:  # a whole-GPU layout: a list of entries
            assert isinstance(geometry, list) and geometry
            for entry in geometry:
                assert set(entry) == {"name", "core", "memory", "count"}
                assert all(isinstance(entry[k], int) for k in ("core", "memory", "count"))


def test_default_templates_use_real_instance_memory(manifests: dict[str, list[dict[str, Any]]]) -> None:
    case = Case("default", manifests["default"])
    groups = _device_config(case)["nvidia"]["knownMigGeometries"]
    seen = {}
    for group in groups:
        for geometry in group["allowedGeometries"]:
            for entry in geometry:
                for model in group["models"]:
                    prev = seen.setdefault((model, entry["name"]), entry["memory"])
                    assert prev == entry["memory"], (model, entry["name"])
    for key, memory in REAL_MEMORY.items():
        assert seen[key] == memory, key
    # HAMi's four (A30, RTX PRO 6000: three) geometries per group, in its order: 1g, mixed, 3g, 7g.
    assert len(groups) == 9
    assert [len(g["allowedGeometries"]) for g in groups] == [3, 4, 4, 4, 4, 4, 4, 4, 3]
    a100 = groups[1]["allowedGeometries"]
    assert [[(e["name"], e["count"]) for e in g] for g in a100] == [
        [("1g.5gb", 7)], [("1g.5gb", 1), ("2g.10gb", 3)], [("3g.20gb", 2)], [("7g.40gb", 1)]]


def test_default_device_config_equals_builtin(manifests: dict[str, list[dict[str, Any]]]) -> None:
    config = pytest.importorskip("models.config")
    if not hasattr(config, "builtin_device_config_document"):
        pytest.skip("models.config.builtin_device_config_document() is not written yet")
    builtin = config.builtin_device_config_document()
    chart = _device_config(Case("default", manifests["default"]))
    assert chart["nvidia"]["knownMigGeometries"] == builtin["nvidia"]["knownMigGeometries"]
    for key, value in builtin["nvidia"].items():
        if key in chart["nvidia"]:
            assert chart["nvidia"][key] == value, key


def test_rendered_config_files_pass_validate_config(case: Case, tmp_path: Path) -> None:
    """`dynamig validate-config` accepts the files the chart renders (skipped until it exists)."""
    cli = Path(sys.executable).parent / "dynamig"
    if not cli.exists():
        pytest.skip("the dynamig console script is not installed")
    probe = subprocess.run([str(cli), "validate-config", "--help"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip("dynamig validate-config is not implemented yet")
    device = tmp_path / "device-config.yaml"
    device.write_text(case.configmap_file("device-config", "device-config.yaml"))
    node = tmp_path / "config.json"
    node.write_text(case.configmap_file("nodeconfig", "config.json"))
    proc = subprocess.run([str(cli), "validate-config", str(device), str(node)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("subcommand", ["extender", "deviceplugin"])
def test_cli_accepts_the_flags_the_chart_passes(
    manifests: dict[str, list[dict[str, Any]]], subcommand: str
) -> None:
    """Every flag the chart puts on a `dynamig …` command line is one the CLI knows (skipped until the
    subcommand exists)."""
    cli = Path(sys.executable).parent / "dynamig"
    if not cli.exists():
        pytest.skip("the dynamig console script is not installed")
    probe = subprocess.run([str(cli), subcommand, "--help"], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"dynamig {subcommand} is not implemented yet")
    flags: set[str] = set()
    for name, docs in manifests.items():
        case = Case(name, docs)
        extra = set(case.values["scheduler"]["extender"]["extraArgs"]) | set(case.values["devicePlugin"]["extraArgs"])
        for kind in ("Deployment", "DaemonSet"):
            for d in case.all(kind):
                for c in d["spec"]["template"]["spec"]["containers"]:
                    cmd = c["command"]
                    if cmd[:2] == ["dynamig", subcommand]:
                        flags |= {a.split("=")[0] for a in cmd if a.startswith("--") and a not in extra}
    assert flags
    missing = {f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", probe.stdout)}
    assert not missing, f"dynamig {subcommand} does not know {sorted(missing)}"


# ------------------------------------------------------------------------------------------ NOTES


@pytest.fixture(scope="session")
def notes_chart(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the chart that renders NOTES.txt into a ConfigMap (helm template skips NOTES)."""
    chart = tmp_path_factory.mktemp("notes") / "dynamig"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\n'
        'data:\n  notes: {{ tpl (.Files.Get "notes.txt") . | quote }}\n')
    yield chart


@pytest.mark.parametrize("name", ["default", "custom"])
def test_notes_render(helm: str, notes_chart: Path, values_files: dict[str, Path], name: str) -> None:
    proc = subprocess.run(
        [helm, "template", RELEASE, str(notes_chart), "--namespace", NAMESPACE, "--kube-version",
         HELM_KUBE_VERSION, "-f", str(values_files[name]), "--show-only", "templates/zz-notes.yaml"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    notes = yaml.safe_load(proc.stdout)["data"]["notes"]
    values = _merged_values(VALUE_SETS[name])
    assert values["schedulerName"] in notes
    assert f"{FULLNAME}-metrics" in notes
    assert "/monitor" in notes
