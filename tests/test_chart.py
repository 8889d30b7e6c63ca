"""The Helm chart, rendered by a real Helm engine (Helm v4 as a library) and every manifest validated
against the schemas of current Kubernetes versions (kubernetes-validate --strict)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk has no wheel for this platform")
import kubernetes_validate  # noqa: E402
from kubernetes_validate.utils import all_versions  # noqa: E402

ROOT = Path(__file__).parent.parent
CHART = ROOT / "charts" / "tails-server"
KUBERNETES = sorted({".".join(v.split(".")[:2]) + ".0" for v in all_versions()}, key=lambda v: tuple(map(int, v.split("."))))[-3:]
CRDS = {"monitoring.coreos.com/v1"}  # custom resources: no schema in Kubernetes' own

EXAMPLES = CHART / "examples"  # the values files the README shows
CASES = {
    "defaults": {},
    "ingress with TLS": yaml.safe_load((EXAMPLES / "ingress-tls.yaml").read_text()),
    "three replicas on S3": yaml.safe_load((EXAMPLES / "s3-replicas.yaml").read_text()),
}


def render(values: dict) -> dict[str, dict]:
    """Every manifest the chart makes with these values, by kind, after schema validation of the values."""
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        files = chart.render(values, name="demo", namespace="tails")
    manifests = {}
    for name, text in files.items():
        if name.endswith(".yaml"):
            for doc in yaml.safe_load_all(text):
                if doc:
                    manifests[doc["kind"]] = doc
    manifests["NOTES"] = files[f"{CHART.name}/templates/NOTES.txt"]
    return manifests


@pytest.mark.parametrize("case", CASES)
def test_the_chart_lints_and_every_manifest_validates_strictly(case):
    values = CASES[case]
    report = helm.lint(str(CHART), values, strict=True)
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] > 1] == [], report
    manifests = render(values)
    kinds = {k for k in manifests if k != "NOTES"}
    assert {"Deployment", "Service"} <= kinds
    for kind, manifest in manifests.items():
        if kind == "NOTES" or manifest["apiVersion"] in CRDS:
            continue
        for version in KUBERNETES:
            kubernetes_validate.validate(manifest, version, strict=True)  # raises on any unknown or wrong field


def test_default_values_run_hardened_on_a_once_volume():
    m = render({})
    pod = m["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
    }
    writable = {mount["mountPath"] for mount in container["volumeMounts"] if not mount.get("readOnly")}
    assert writable == {"/tails-files", "/tmp"}  # the storage path, and tempfile's default directory
    assert m["Deployment"]["spec"]["strategy"] == {"type": "Recreate"}  # ReadWriteOnce: no overlap in a rollout
    # SIGTERM after the preStop pause; then 8 s for requests and 8 s for slow readers (README: graceful stop)
    assert pod["terminationGracePeriodSeconds"] >= 5 + 8 + 8
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert "PodDisruptionBudget" not in m and "Ingress" not in m and "topologySpreadConstraints" not in pod
    assert "kubectl --namespace tails port-forward service/demo-tails-server 6543" in m["NOTES"]


def test_ingress_serves_the_host_over_tls():
    m = render(CASES["ingress with TLS"])
    spec = m["Ingress"]["spec"]
    assert spec["tls"] == [{"hosts": ["tails.example.org"], "secretName": "demo-tails-server-tls"}]
    assert spec["ingressClassName"] == "nginx"
    (rule,) = spec["rules"]
    assert rule["host"] == "tails.example.org"
    assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "demo-tails-server", "port": {"name": "http"}}
    annotations = m["Ingress"]["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "64m"  # defaults merge with the user's
    env = {e["name"]: e["value"] for e in m["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TAILS_SERVER_TRUSTED_PROXY"] == "10.0.0.0/8"
    assert "https://tails.example.org/" in m["NOTES"]
    named = render({"ingress": {"enabled": True, "host": "tails.example.org", "tlsSecret": "mine"}})
    assert named["Ingress"]["spec"]["tls"][0]["secretName"] == "mine"
    plain = render({"ingress": {"enabled": True, "host": "tails.example.org", "tls": False}})
    assert "tls" not in plain["Ingress"]["spec"] and "over HTTPS only" in plain["NOTES"]


def test_three_replicas_on_s3_spread_with_a_disruption_budget():
    m = render(CASES["three replicas on S3"])
    deployment, pod = m["Deployment"], m["Deployment"]["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3 and "strategy" not in deployment["spec"]  # RollingUpdate
    assert m["PodDisruptionBudget"]["spec"] == {
        "maxUnavailable": 1, "selector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
    }
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert "PersistentVolumeClaim" not in m
    assert {v["name"]: v for v in pod["volumes"]}["tails-files"] == {"name": "tails-files", "emptyDir": {}}
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["TAILS_SERVER_STORAGE"] == "s3://tails/files"
    assert env["TAILS_SERVER_S3_ENDPOINT_URL"] == "http://seaweedfs-s3:8333"
    assert env["TAILS_SERVER_LEDGER"] == "sovrin:mainnet=/ledgers/sovrin_mainnet"
    assert m["ConfigMap"]["data"] == {"sovrin_mainnet": '{"reqSignature":{}}\n'}
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "tails-s3"}}]
    assert m["ServiceMonitor"]["spec"]["endpoints"][0]["path"] == "/metrics"


def test_a_shared_filesystem_rolls_out_pods_side_by_side():
    m = render({"replicaCount": 2, "persistence": {"accessModes": ["ReadWriteMany"]}})
    assert "strategy" not in m["Deployment"]["spec"] and m["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    env = {e["name"]: e.get("value") for e in m["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TAILS_SERVER_INDEX_PATH"] == "/index/index.sqlite3"  # each pod's own index, off the shared volume


@pytest.mark.parametrize(("values", "message"), [
    ({"replicas": 3}, "additional properties 'replicas' not allowed"),
    ({"replicaCount": "3"}, "want integer"),
    ({"ingress": {"enabled": "yes"}}, "want boolean"),
    ({"ingress": {"hostname": "x"}}, "additional properties 'hostname' not allowed"),
    ({"persistence": {"accessModes": ["ReadWriteAlways"]}}, "accessModes/0"),
    ({"s3": {"url": "http://bucket"}}, "/s3/url"),
    ({"serviceMonitor": {"interval": 30}}, "want string"),
])
def test_values_schema_rejects_typos_and_wrong_types(values, message):
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(values)
    assert message in str(caught.value)


@pytest.mark.parametrize(("values", "message"), [
    ({"replicaCount": 2}, "replicaCount > 1 needs shared storage"),  # on the default ReadWriteOnce volume
    ({"replicaCount": 2, "persistence": {"enabled": False}}, "replicaCount > 1 needs shared storage"),
    ({"ingress": {"enabled": True}}, "ingress.enabled needs ingress.host"),
])
def test_unsafe_combinations_fail_with_a_reason(values, message):
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmError) as caught:
        chart.render(values, name="demo", namespace="tails")
    assert message in str(caught.value)


def readme_installs() -> list[list[str]]:
    """The `helm install` commands of the README, as argument lists."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    return [shlex.split(line) for line in re.findall(r"^helm install .*$", text, re.M)]


def merged(base: dict, extra: dict) -> dict:
    """`extra` over `base`, maps merged key by key as Helm merges --set over -f."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@pytest.mark.parametrize("command", readme_installs(), ids=lambda c: c[-1])
def test_the_readme_helm_installs_run_as_a_client_side_dry_run(command):
    # No cluster here: Helm installs with --dry-run=client, which renders and checks everything but the API server's say.
    name, chart, options = command[2], command[3], command[4:]
    values: dict = {}
    while options:
        flag, argument, options = options[0], options[1], options[2:]
        assert flag in ("-f", "--set"), command
        values = merged(values, yaml.safe_load((ROOT / argument).read_text()) if flag == "-f" else helm.parse_set_string(argument))
    with helm.Config(namespace="tails", storage_driver="memory") as cfg:
        release = cfg.install(str(ROOT / chart), name, values, dry_run="client")
    assert release["status"] == "pending-install" and "kind: Deployment" in release["manifest"], release["status"]
    assert ("kind: Ingress" in release["manifest"]) == bool(values.get("ingress", {}).get("enabled"))


def test_the_readme_shows_both_example_installs():
    assert {c[5] for c in readme_installs()} == {str(p.relative_to(ROOT)) for p in EXAMPLES.glob("*.yaml")}
