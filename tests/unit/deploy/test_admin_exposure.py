"""The shipped manifests keep the admin port private: probes and scraping only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ingestd import config

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
K8S = DEPLOY / "k8s"


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def container() -> dict[str, Any]:
    (deployment,) = documents(K8S / "deployment.yaml")
    (first,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(first)


def test_otlp_services_do_not_publish_the_admin_port() -> None:
    """No Service carries 13133: /status and /metrics are not reachable through the OTLP VIP."""
    for service in documents(K8S / "service.yaml"):
        ports = {p["port"] for p in service["spec"]["ports"]}
        assert 13133 not in ports, service["metadata"]["name"]
        assert "admin" not in {p.get("targetPort") for p in service["spec"]["ports"]}


def test_probes_and_scrape_still_reach_the_admin_port() -> None:
    """The kubelet probes and the Prometheus annotations point at the pod's admin port."""
    (deployment,) = documents(K8S / "deployment.yaml")
    main = container()
    admin = next(p for p in main["ports"] if p["name"] == "admin")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"]["port"] == "admin"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(admin["containerPort"])


def test_network_policy_admits_admin_only_from_the_scraper() -> None:
    """The NetworkPolicy (in the kustomization) opens OTLP and limits the admin port to a peer."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "networkpolicy.yaml" in kustomization["resources"]
    (policy,) = documents(K8S / "networkpolicy.yaml")
    assert policy["kind"] == "NetworkPolicy"
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "ingestd"}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = policy["spec"]["ingress"]
    admin_rules = [r for r in rules if any(p["port"] == "admin" for p in r["ports"])]
    assert admin_rules
    assert all(r.get("from") for r in admin_rules), "the admin port needs a `from`"
    open_ports = {p["port"] for r in rules if not r.get("from") for p in r["ports"]}
    assert open_ports == {"otlp-grpc", "otlp-http"}


def test_compose_publishes_the_admin_port_on_loopback_only() -> None:
    """compose binds 13133 to 127.0.0.1; the OTLP ports stay published."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    ports = compose["services"]["ingestd"]["ports"]
    admin = [p for p in ports if str(p).endswith(":13133")]
    assert admin == ["127.0.0.1:13133:13133"]


def test_k8s_config_takes_the_admin_token_from_the_secret() -> None:
    """The ConfigMap loads with and without INGESTD_ADMIN_TOKEN (the Secret key is optional)."""
    env = {
        "INGESTD_PG_DSN": "postgresql://x@db/x",
        "INGESTD_ES_URL": "http://es:9200",
        "INGESTD_REDIS_URL": "redis://redis:6379/0",
    }
    path = K8S / "config" / "ingestd.yaml"
    text = path.read_text()
    assert config.parse(text, environ=env).admin.status_token is None
    token = "t" * 24
    with_token = config.parse(text, environ={**env, "INGESTD_ADMIN_TOKEN": token})
    assert with_token.admin.status_token == token
