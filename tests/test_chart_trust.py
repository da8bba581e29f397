"""The chart's side of the trust model (docs/security.md): the allocation key Secret reaches the
extender and every device plugin, the exact identities are passed, and the ValidatingAdmissionPolicies
mean what docs/security.md says — their CEL is evaluated here with cel-python over real-shaped
admission requests (kubernetes-validate checks their schema in test_chart.py)."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from test_chart import (  # noqa: F401  (fixtures)
    COMPONENT_SA,
    FULLNAME,
    NAMESPACE,
    Case,
    _template,
    case,
    manifests,
    rendered,
    values_files,
)

from models.codecs import NODE_AGENT_POD_KEYS, POD_ALLOCATION, POD_BIND_PHASE
from models.signing import load_keyring

EXT = f"system:serviceaccount:{NAMESPACE}:{COMPONENT_SA['extender']}"
DP = f"system:serviceaccount:{NAMESPACE}:{COMPONENT_SA['device-plugin']}"
KEY_PATH = "/etc/dynamig/allocation-key/allocation.key"


def _args(c: dict[str, Any], flag: str) -> list[str]:
    cmd = c["command"]
    return [cmd[i + 1] for i, a in enumerate(cmd) if a == flag]


def _key_volume(pod: dict[str, Any], c: dict[str, Any]) -> str:
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "allocation-key"]
    assert mount["readOnly"] is True and KEY_PATH.startswith(mount["mountPath"] + "/")
    (vol,) = [v for v in pod["spec"]["volumes"] if v["name"] == "allocation-key"]
    assert vol["secret"]["items"] == [{"key": "allocation.key", "path": "allocation.key"}]
    return str(vol["secret"]["secretName"])


def test_allocation_key_reaches_extender_and_plugin(case: Case, tmp_path: Path) -> None:  # noqa: F811
    policies = case.all("ValidatingAdmissionPolicy")
    assert len(policies) == len(case.all("ValidatingAdmissionPolicyBinding")) == 2  # rendered for 1.33
    ext = case.container(case.scheduler_pod, "extender")
    dp = case.container(case.plugin_pod, "device-plugin")
    assert _args(ext, "--allocation-key-file") == [KEY_PATH] == _args(dp, "--allocation-key-file")
    assert _args(ext, "--trusted-user") == [EXT] and _args(ext, "--node-agent-user") == [DP]
    assert "--allocation-key-file" not in case.container(case.scheduler_pod, "kube-scheduler").get("command", [])
    secret = case.one("Secret", f"{FULLNAME}-allocation-key")
    assert _key_volume(case.scheduler_pod, ext) == _key_volume(case.plugin_pod, dp) == secret["metadata"]["name"]
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    f = tmp_path / "allocation.key"
    f.write_bytes(base64.b64decode(secret["data"]["allocation.key"]))
    (key,) = load_keyring(str(f)).keys  # what the services load
    assert len(key) == 64


def test_existing_secret_is_used_and_none_generated(helm: str) -> None:
    proc = _template(helm, None, "--set", "allocationKey.existingSecret=vault-dynamig-key")
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert not [d for d in docs if d["kind"] == "Secret" and "allocation-key" in d["metadata"]["name"]]
    pods = [d["spec"]["template"] for d in docs if d["kind"] in ("Deployment", "DaemonSet")]
    names = {v["secret"]["secretName"] for p in pods for v in p["spec"]["volumes"] if v["name"] == "allocation-key"}
    assert names == {"vault-dynamig-key"}


@pytest.mark.parametrize(("args", "expected"), [
    (("--kube-version", "1.29.9"), 0), (("--set", "admissionPolicy.enabled=false"), 0),
    (("--kube-version", "1.29.9", "--set", "admissionPolicy.enabled=true"), 2),
])
def test_admission_policies_render_when_the_cluster_has_them(helm: str, args: tuple[str, ...],
                                                             expected: int) -> None:
    proc = _template(helm, None, *args)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    policies = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    bindings = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert len(policies) == len(bindings) == expected
    assert {b["spec"]["policyName"] for b in bindings} == {p["metadata"]["name"] for p in policies}
    assert all(b["spec"]["validationActions"] == ["Deny"] for b in bindings)


# ----------------------------------------------------------------------------- the policies' CEL


class Policy:
    """One ValidatingAdmissionPolicy evaluated as the API server does: variables in order, then every
    validation; a request is allowed when all validations are true."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.celpy = celpy
        env = celpy.Environment()
        self.variables = [(v["name"], env.program(env.compile(v["expression"]))) for v in doc["spec"]["variables"]]
        self.validations = [env.program(env.compile(v["expression"])) for v in doc["spec"]["validations"]]

    def allowed(self, op: str, obj: dict[str, Any], old: dict[str, Any] | None, user: str,
                node: str | None = None, groups: tuple[str, ...] = ()) -> bool:
        info: dict[str, Any] = {"username": user, "groups": list(groups)}
        if node is not None:
            info["extra"] = {"authentication.kubernetes.io/node-name": [node]}
        act: dict[str, Any] = {"request": {"operation": op, "userInfo": info}, "object": obj, "oldObject": old}
        cel = {k: self.celpy.json_to_cel(v) for k, v in act.items()}
        variables: dict[str, Any] = {}
        for name, prog in self.variables:
            variables[name] = prog.evaluate({**cel, "variables": self.celpy.json_to_cel(variables) if not variables
                                             else self.celpy.celtypes.MapType(variables)})
        ctx = {**cel, "variables": self.celpy.celtypes.MapType(variables)}
        results = [prog.evaluate(ctx) for prog in self.validations]
        assert all(isinstance(r, self.celpy.celtypes.BoolType) for r in results), results  # no CEL errors
        return all(bool(r) for r in results)


@pytest.fixture(scope="module")
def policies(manifests: dict[str, list[dict[str, Any]]]) -> dict[str, Policy]:  # noqa: F811
    docs = [d for d in manifests["default"] if d["kind"] == "ValidatingAdmissionPolicy"]
    return {d["metadata"]["name"].removeprefix(f"{FULLNAME}-"): Policy(d) for d in docs}


def pod(annotations: dict[str, str] | None = None, node: str | None = "node-a") -> dict[str, Any]:
    p: dict[str, Any] = {"metadata": {"name": "p", "namespace": "ml"}, "spec": {"containers": [{"name": "c"}]}}
    if annotations is not None:
        p["metadata"]["annotations"] = annotations
    if node:
        p["spec"]["nodeName"] = node
    return p


def with_ann(obj: dict[str, Any], **changes: str | None) -> dict[str, Any]:
    new = copy.deepcopy(obj)
    ann = new["metadata"].setdefault("annotations", {})
    for k, v in changes.items():
        key = "dynamig.io/" + k.replace("_", "-")
        if v is None:
            ann.pop(key, None)
        else:
            ann[key] = v
    return new


def test_pod_policy(policies: dict[str, Policy]) -> None:
    pol = policies["pod-annotations"]
    plain = pod()
    claimed = pod({POD_ALLOCATION: "{}", POD_BIND_PHASE: "allocating"})
    # CREATE: nobody creates a pod with a dynamig.io/ annotation (the webhook strips them first)
    assert pol.allowed("CREATE", plain, None, "alice")
    assert not pol.allowed("CREATE", with_ann(plain, allocation="{}"), None, "alice")
    assert pol.allowed("CREATE", pod({"team": "x"}), None, "alice")
    # UPDATE by a user: unrelated changes pass; adding, changing or removing a dynamig.io/ key does not
    assert pol.allowed("UPDATE", pod({"team": "y", POD_ALLOCATION: "{}"}), pod({POD_ALLOCATION: "{}"}), "alice")
    for new, old in ((with_ann(plain, allocation="{}"), plain), (with_ann(claimed, allocation=None), claimed),
                     (with_ann(claimed, bind_phase="success"), claimed), (with_ann(claimed, anything="1"), claimed)):
        assert not pol.allowed("UPDATE", new, old, "alice")
        assert not pol.allowed("UPDATE", new, old, "system:serviceaccount:team-a:dynamig")
    # the extender writes everything
    assert pol.allowed("UPDATE", with_ann(plain, allocation="{}", node="node-a"), plain, EXT)
    # the device plugin: only its keys, only on a pod bound to the node of its token
    served = with_ann(claimed, allocated="{}", bind_phase="success")
    assert set(NODE_AGENT_POD_KEYS) >= {"dynamig.io/allocated", "dynamig.io/bind-phase"}
    assert pol.allowed("UPDATE", served, claimed, DP, node="node-a")
    assert not pol.allowed("UPDATE", served, claimed, DP, node="node-b")
    assert not pol.allowed("UPDATE", served, claimed, DP)  # a token without the node claim
    assert not pol.allowed("UPDATE", with_ann(claimed, allocation="{\"x\":1}"), claimed, DP, node="node-a")
    unbound = pod({POD_ALLOCATION: "{}"}, node=None)
    assert not pol.allowed("UPDATE", with_ann(unbound, allocated="{}"), unbound, DP, node="node-a")


def node(annotations: dict[str, str] | None = None, name: str = "node-a", labels: dict[str, str] | None = None,
         ) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": dict(annotations or {}), "labels": dict(labels or {})},
            "spec": {"podCIDR": "10.0.0.0/24"}}


def test_node_policy(policies: dict[str, Policy]) -> None:
    pol = policies["node-annotations"]
    n = node({"dynamig.io/node-gpus": "old", "dynamig.io/node-lock": "1,ml,p,ext"})
    # the plugin publishes its registration and releases the lock, on its own node only
    assert pol.allowed("UPDATE", with_ann(n, node_gpus="new"), n, DP, node="node-a")
    assert pol.allowed("UPDATE", with_ann(n, node_lock=None), n, DP, node="node-a")
    assert not pol.allowed("UPDATE", with_ann(n, node_gpus="new"), n, DP, node="node-b")
    assert not pol.allowed("UPDATE", with_ann(n, node_lock="2,ml,q,dp"), n, DP, node="node-a")
    assert not pol.allowed("UPDATE", node(n["metadata"]["annotations"], labels={"x": "1"}), n, DP, node="node-a")
    other = copy.deepcopy(n)
    other["metadata"]["annotations"]["team"] = "x"
    assert not pol.allowed("UPDATE", other, n, DP, node="node-a")
    # the extender takes and releases the lock, nothing else
    assert pol.allowed("UPDATE", with_ann(n, node_lock="2,ml,q,ext"), n, EXT)
    assert not pol.allowed("UPDATE", with_ann(n, node_gpus="fake GPUs"), n, EXT)
    # anyone else: no dynamig.io/ key (cluster admins may clear a stuck lock), other changes are theirs
    assert not pol.allowed("UPDATE", with_ann(n, node_gpus="fake"), n, "alice")
    assert pol.allowed("UPDATE", other, n, "alice")
    assert pol.allowed("UPDATE", with_ann(n, node_lock=None), n, "admin", groups=("system:masters",))


def test_webhook_sees_creates_and_every_update_that_touches_a_dynamig_key(
        helm: str, manifests: dict[str, list[dict[str, Any]]]) -> None:  # noqa: F811
    (mwc,) = [d for d in manifests["default"] if d["kind"] == "MutatingWebhookConfiguration"]
    (cond,) = mwc["webhooks"][0]["matchConditions"]
    env = celpy.Environment()
    prog = env.program(env.compile(cond["expression"]))

    def sent(op: str, new: dict[str, Any], old: dict[str, Any] | None) -> bool:
        act = {"request": {"operation": op}, "object": new, "oldObject": old}
        return bool(prog.evaluate({k: celpy.json_to_cel(v) for k, v in act.items()}))

    claimed = pod({POD_ALLOCATION: "{}"})
    assert sent("CREATE", pod(), None) and sent("CREATE", claimed, None)
    assert not sent("UPDATE", pod({"team": "x"}), pod())  # a controller's update: not sent
    assert not sent("UPDATE", pod({POD_ALLOCATION: "{}", "team": "x"}), claimed)
    assert sent("UPDATE", claimed, pod())  # added
    assert sent("UPDATE", pod(), claimed)  # removed (also: annotations gone entirely)
    assert sent("UPDATE", pod({"team": "x"}), claimed)
    assert sent("UPDATE", with_ann(claimed, allocation="{\"a\":1}"), claimed)  # changed
    # older clusters get no matchConditions (the field is GA in 1.30): every UPDATE is sent
    proc = _template(helm, None, "--show-only", "templates/webhook.yaml", "--kube-version", "1.29.9")
    (mwc,) = [d for d in yaml.safe_load_all(proc.stdout) if d and d["kind"] == "MutatingWebhookConfiguration"]
    assert "matchConditions" not in mwc["webhooks"][0]
