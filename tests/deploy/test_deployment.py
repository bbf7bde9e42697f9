"""The deployment artefacts, checked offline: both kustomize overlays render (``kubectl kustomize``) and pass
``kubernetes-validate --strict``, follow the operating rules of the README (probes on the ops endpoints,
non-root read-only containers, credentials from Secrets, drain window inside the grace period, public file
URLs matching the Service/Ingress, TLS material from Secrets, no default credential), the Dockerfile passes hadolint,
the lock file covers pyproject.toml and docker-compose publishes no broker, Redis or PostgreSQL port."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from csms.config import Settings

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "production")
BIN = Path(sys.executable).parent
# set in the manifests for the diagnostics service's public URLs (the settings land with its branch)
KNOWN_EXTRA_SETTINGS = {"FILES_PUBLIC_HTTP_URL", "FILES_PUBLIC_FTP_URL"}


def tool(name: str) -> str:
    """The path of a command-line tool the checks need; missing fails under CI=true, else skips."""
    path = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if path is None:
        message = f"{name} is not installed (.ci/run installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


_rendered: dict[str, str] = {}


def render(overlay: str) -> str:
    if overlay not in _rendered:
        result = subprocess.run([tool("kubectl"), "kustomize", str(KUSTOMIZE / "overlays" / overlay)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        _rendered[overlay] = result.stdout
    return _rendered[overlay]


def resources(overlay: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(render(overlay)) if doc]


def of_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def csms_deployments(docs: list[dict]) -> dict[str, dict]:
    return {name: d for name, d in of_kind(docs, "Deployment").items()
            if d["metadata"]["labels"].get("app.kubernetes.io/name") == "ocpp-csms"}


def config(docs: list[dict]) -> dict[str, str]:
    return of_kind(docs, "ConfigMap")["csms-config"]["data"]


def env_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names.add(str(alias.choices[0]) if alias is not None else name.upper())
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_passes_strict_schema_validation(overlay, tmp_path):
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(render(overlay))
    result = subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", str(manifest)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_csms_pod_is_hardened_probed_and_configured(overlay):
    docs = resources(overlay)
    deployments = csms_deployments(docs)
    assert deployments
    settings = config(docs)
    unknown = set(settings) - env_names() - KNOWN_EXTRA_SETTINGS
    assert not unknown, f"not settings of the CSMS: {unknown}"
    Settings(**{k.lower(): v for k, v in settings.items() if k not in KNOWN_EXTRA_SETTINGS})  # valid values
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "csms"
        [container] = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert container["command"][:2] == ["python", "-m"] and container["command"][2].startswith("services.")
        ops = next(p for p in container["ports"] if p["name"] == "ops")
        assert str(ops["containerPort"]) == settings["OPS_PORT"]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and \
            "memory" in container["resources"]["limits"]
        sources = [next(iter(source.values()))["name"] for source in container["envFrom"]]
        assert sources[0] == "csms-config" and sources[1].startswith("csms-credentials")  # (dev: hashed name)
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts  # the root filesystem is read-only
        if container["command"][2] in ("services.diagnostics", "services.all"):
            assert settings["FILES_ROOT"] in mounts
    # credentials never sit in the ConfigMap
    for key, value in settings.items():
        assert not re.search(r"://[^/@]*:[^/@]+@", value), f"{key} carries credentials"
        assert key not in ("AMQP_URL", "REDIS_URL", "DATABASE_URL", "FILES_OPERATOR_TOKEN")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_the_drain(overlay):
    docs = resources(overlay)
    settings = config(docs)
    drain = float(settings["GATEWAY_DRAIN_SECONDS"]) + float(settings["CSMS_CALL_TIMEOUT"])
    for name, deployment in csms_deployments(docs).items():
        pod = deployment["spec"]["template"]["spec"]
        command = pod["containers"][0]["command"][2]
        pre_stop = pod["containers"][0].get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        pause = float(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0.0
        service_drain = float(settings["SERVICE_DRAIN_SECONDS"])
        needed = {"services.gateway": pause + drain, "services.all": pause + drain + service_drain}.get(
            command, pause + service_drain)
        assert pod["terminationGracePeriodSeconds"] > needed, (name, pod["terminationGracePeriodSeconds"], needed)


def test_production_runs_one_deployment_per_service_and_scales_the_gateway():
    docs = resources("production")
    deployments = csms_deployments(docs)
    commands = {d["spec"]["template"]["spec"]["containers"][0]["command"][2]: d for d in deployments.values()}
    assert set(commands) == {"services.gateway", "services.stations", "services.transactions",
                             "services.smart_charging", "services.diagnostics", "services.api",
                             "services.security"}
    # RabbitMQ, Redis and PostgreSQL come from operators or managed services; credentials from a Secret
    assert set(of_kind(docs, "Deployment")) == set(deployments)
    assert not of_kind(docs, "StatefulSet") and not of_kind(docs, "Secret")
    assert config(docs)["AMQP_QUORUM_QUEUES"] == "true"
    [hpa] = of_kind(docs, "HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == commands["services.gateway"]["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    budgets = of_kind(docs, "PodDisruptionBudget").values()
    for deployment in deployments.values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert any(set(b["spec"]["selector"]["matchLabels"].items()) <= set(labels.items()) for b in budgets), \
            deployment["metadata"]["name"]
    gateway = commands["services.gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "GATEWAY_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in gateway["env"]


def _serving(docs: list[dict], service: dict) -> list[dict]:
    selector = set(service["spec"]["selector"].items())
    return [d for d in csms_deployments(docs).values()
            if selector <= set(d["spec"]["template"]["metadata"]["labels"].items())]


def test_production_public_file_urls_match_the_ingress_and_the_ftp_service():
    docs = resources("production")
    settings = config(docs)
    http = urlsplit(settings["FILES_PUBLIC_HTTP_URL"])
    ingress = of_kind(docs, "Ingress")["csms-files"]
    [rule] = [r for r in ingress["spec"]["rules"] if r["host"] == http.hostname]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    files_service = of_kind(docs, "Service")[backend["name"]]
    assert backend["port"]["name"] in {p["name"] for p in files_service["spec"]["ports"]}
    assert [d["metadata"]["name"] for d in _serving(docs, files_service)] == ["csms-diagnostics"]
    tls_hosts = {h for t in ingress["spec"].get("tls", []) for h in t["hosts"]}
    assert http.scheme == ("https" if http.hostname in tls_hosts else "http") and http.port is None
    ftp = urlsplit(settings["FILES_PUBLIC_FTP_URL"])
    public = [s for s in of_kind(docs, "Service").values() if s["spec"].get("type") == "LoadBalancer"
              and any(p["name"] == "ftp" and p["port"] == (ftp.port or 21) for p in s["spec"]["ports"])]
    assert len(public) == 1 and [d["metadata"]["name"] for d in _serving(docs, public[0])] == ["csms-diagnostics"]
    passive = [p["port"] for p in public[0]["spec"]["ports"] if p["name"].startswith("ftp-data")]
    low, high = (int(x) for x in settings["FILES_FTP_PASSIVE_PORTS"].split("-"))
    assert passive == list(range(low, high + 1))


def test_production_load_balancers_keep_the_source_address_of_charge_points():
    """The login lockout counts failed logins per source address (and the FTP intake connections per address):
    behind a LoadBalancer with the default Cluster policy every charge point would come from a node's address, and
    one of them failing would lock out all the others coming through that node."""
    docs = resources("production")
    balancers = {name: s for name, s in of_kind(docs, "Service").items() if s["spec"].get("type") == "LoadBalancer"}
    assert "csms-gateway" in balancers
    assert {name: s["spec"].get("externalTrafficPolicy") for name, s in balancers.items()} == dict.fromkeys(
        balancers, "Local")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_http_api_is_served_on_its_port_and_only_through_tls_in_production(overlay):
    docs = resources(overlay)
    service = of_kind(docs, "Service")["csms-api"]
    [port] = service["spec"]["ports"]
    [serving] = [d for d in _serving(docs, service)]
    container = serving["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][2] == ("services.api" if overlay == "production" else "services.all")
    [target] = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    assert str(target["containerPort"]) == config(docs)["API_PORT"]
    if overlay == "production":
        ingress = of_kind(docs, "Ingress")["csms-api"]
        [rule] = ingress["spec"]["rules"]
        assert rule["host"] in {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
        assert rule["http"]["paths"][0]["backend"]["service"] == {"name": "csms-api", "port": {"name": "http"}}
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_dev_runs_everything_in_one_pod_with_its_own_infrastructure():
    docs = resources("dev")
    deployments = csms_deployments(docs)
    [csms] = deployments.values()
    assert csms["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "-m", "services.all"]
    infrastructure = set(of_kind(docs, "Deployment")) - set(deployments)
    assert infrastructure == {"rabbitmq", "redis"}
    assert {"rabbitmq", "redis", "postgres"} <= set(of_kind(docs, "Service"))
    # PostgreSQL, the system of record, keeps its data on a claim of its StatefulSet, not on the pod
    [postgres] = of_kind(docs, "StatefulSet").values()
    assert postgres["metadata"]["name"] == "postgres" and postgres["spec"]["replicas"] == 1
    assert of_kind(docs, "Service")[postgres["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    [claim] = postgres["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and claim["spec"]["resources"]["requests"]["storage"]
    pod = postgres["spec"]["template"]["spec"]
    [container] = pod["containers"]
    data = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}[claim["metadata"]["name"]]
    assert claim["metadata"]["name"] not in {v["name"] for v in pod.get("volumes", [])}  # not an emptyDir
    pgdata = {e["name"]: e.get("value") for e in container.get("env", [])}["PGDATA"]
    assert pgdata.startswith(data + "/")
    secrets = of_kind(docs, "Secret")
    assert any(name.startswith("csms-credentials") for name in secrets)
    settings = config(docs)
    files_service = of_kind(docs, "Service")["csms-files"]
    ports = {p["name"]: p["port"] for p in files_service["spec"]["ports"]}
    # the documented port-forward keeps the Service's port numbers
    assert urlsplit(settings["FILES_PUBLIC_HTTP_URL"]).port == ports["http"]
    assert urlsplit(settings["FILES_PUBLIC_FTP_URL"]).port == ports["ftp"]
    for service in ("csms-gateway", "csms-files"):
        assert [d["metadata"]["name"] for d in _serving(docs, of_kind(docs, "Service")[service])] == ["csms"]


# ---- image, lock file, compose ---------------------------------------------------------------------
def test_dockerfile_passes_hadolint():
    result = subprocess.run([tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_multi_stage_non_root_and_installs_from_the_lock_file():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+", text, flags=re.M)
    assert len(stages) >= 2
    final = text.rsplit("\nFROM ", 1)[1]
    user = re.findall(r"^USER\s+(\S+)", final, flags=re.M)
    assert user and user[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"pip install [^\n]*--require-hashes[^\n]*-r requirements\.lock", text)
    assert "pip install" not in final  # nothing installed in the runtime stage


def test_lock_file_pins_every_dependency_with_hashes():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = (ROOT / "requirements.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", lock, flags=re.M))
    pins = {canonicalize_name(name): version for name, version in pins.items()}
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in requirements.lock: regenerate it"
        assert requirement.specifier.contains(pins[name], prereleases=True), (line, pins[name])
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", lock.split("\n", 1)[1])
    for block in blocks:
        if "==" in block.split("\n", 1)[0]:
            assert "--hash=sha256:" in block, block.split("\n", 1)[0]


def test_compose_publishes_no_infrastructure_port_and_keeps_no_credentials():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("rabbitmq", "redis", "postgres"):
        assert "ports" not in services[name], name
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            value = str(value)
            if re.search(r"PASSWORD|_PASS$|TOKEN|SECRET|CLI_AUTH$", key):
                assert value.startswith("${"), f"{name}.{key} must come from the environment"
            if "://" in value and "@" in value:
                credentials = value.split("://", 1)[1].split("@", 1)[0]
                assert ":" not in credentials or "${" in credentials, f"{name}.{key} carries a password"


# ---- security: TLS material from Secrets, secure defaults, no default credentials ---------------------------------
def _secret_files(deployment: dict) -> dict[str, str]:
    """Setting -> file path, for every *_FILE setting of the container, checked to lie on a mounted Secret."""
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
    found = {}
    for item in container.get("env", []):
        if item["name"].endswith("_FILE") and "value" in item:
            [mount] = [path for path in mounts if item["value"].startswith(path + "/")]
            assert mounts[mount] in secrets, (item, "not on a Secret volume")
            found[item["name"]] = secrets[mounts[mount]]
    return found


def test_production_tls_material_and_the_ca_come_from_secrets():
    docs = resources("production")
    deployments = {d["spec"]["template"]["spec"]["containers"][0]["command"][2]: d
                   for d in csms_deployments(docs).values()}
    assert _secret_files(deployments["services.gateway"]) == {
        "GATEWAY_TLS_CERT_FILE": "csms-gateway-tls", "GATEWAY_TLS_KEY_FILE": "csms-gateway-tls"}
    assert _secret_files(deployments["services.security"]) == {
        "SECURITY_CA_CERT_FILE": "csms-security-ca", "SECURITY_CA_KEY_FILE": "csms-security-ca"}
    assert _secret_files(deployments["services.diagnostics"]) == {
        "FILES_TLS_CERT_FILE": "csms-files-tls", "FILES_TLS_KEY_FILE": "csms-files-tls",
        "FIRMWARE_SIGNING_CERT_FILE": "csms-firmware-signing", "FIRMWARE_SIGNING_KEY_FILE": "csms-firmware-signing"}
    # wss reaches the gateway's TLS port as TCP (client certificates end in the gateway)
    gateway = deployments["services.gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "ocpp-tls", "containerPort": 9443} in gateway["ports"]
    service = of_kind(docs, "Service")["csms-gateway"]
    assert {"name": "ocpp-tls", "port": 443, "targetPort": "ocpp-tls"} in service["spec"]["ports"]
    settings = config(docs)
    assert urlsplit(settings["FILES_PUBLIC_FTP_URL"]).scheme == "ftps"
    # each service may have its own RabbitMQ user (the Secret csms-amqp is optional)
    for command, deployment in deployments.items():
        env = deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])
        [amqp] = [e for e in env if e["name"] == "AMQP_URL"]
        ref = amqp["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"], ref["optional"]) == ("csms-amqp", command.split(".")[1], True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_installation_asks_charge_points_for_credentials(overlay):
    settings = config(resources(overlay))
    Settings(**{k.lower(): v for k, v in settings.items() if k not in KNOWN_EXTRA_SETTINGS})
    assert settings["GATEWAY_AUTH"] == "basic" and int(settings["GATEWAY_MIN_SECURITY_PROFILE"]) >= 1


def test_no_default_credentials_anywhere():
    """No change-me placeholders or shipped tokens: every credential is the operator's (or generated)."""
    files = [ROOT / "docker-compose.yml", *sorted((ROOT / "deploy").rglob("*.y*ml")),
             *sorted((ROOT / "deploy").rglob("*.env"))]
    for path in files:
        text = path.read_text()
        assert not re.search(r"change[-_ ]?me", text, flags=re.I), path
        assert "dev-operator-token" not in text, path
    example = (KUSTOMIZE / "overlays" / "production" / "credentials.example.env").read_text()
    assert all(line.endswith("=") for line in example.splitlines() if line and not line.startswith("#"))


def test_compose_runs_the_security_service_and_serves_tls_from_secrets():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert services["security"]["command"] == ["python", "-m", "services.security"]
    gateway = services["gateway"]
    assert set(gateway["secrets"]) == {"csms_tls_cert", "csms_tls_key"}
    assert gateway["environment"]["GATEWAY_TLS_CERT_FILE"] == "/run/secrets/csms_tls_cert"
    assert "9443:9443" in gateway["ports"]
    assert services["diagnostics"]["environment"]["FILES_PUBLIC_FTP_URL"].startswith("ftps://")
    assert all(service.get("environment", {}).get("GATEWAY_AUTH", "basic") == "basic"
               for service in services.values())
    assert set(compose["secrets"]) == {"csms_tls_cert", "csms_tls_key"}


EXEC_COMMAND = re.compile(r"kubectl (?:-n \S+ )?exec deploy/(?P<deployment>\S+) -- (?P<command>[^`);\n]+)")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_commands_the_manifests_suggest_exist_in_the_image(overlay):
    """``kubectl exec deploy/X -- CMD`` in a manifest's comments: X is a Deployment of the overlay and CMD runs in
    the image. The image installs the dependencies, not the project, so there is no ``csms`` script: the CLI is
    ``python -m csms.cli`` (the subcommand must exist: its --help answers)."""
    texts = [path.read_text() for path in sorted((KUSTOMIZE / "overlays" / overlay).rglob("*.yaml"))]
    found = [match for text in texts for match in EXEC_COMMAND.finditer(text)]
    assert found, f"the {overlay} overlay suggests no command"
    deployments = of_kind(resources(overlay), "Deployment")
    for match in found:
        assert match["deployment"] in deployments, match.group(0)
        words = match["command"].split()
        assert words[:3] == ["python", "-m", "csms.cli"], match.group(0)
        subcommand = [w for w in words[3:] if not w.startswith("-") and "=" not in w][:2]
        done = subprocess.run([sys.executable, "-m", "csms.cli", *subcommand, "--help"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stdout.startswith("Usage: csms"), (match.group(0), done.stderr)
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY libs /app/libs" in dockerfile and "PYTHONPATH=/app/libs:/app" in dockerfile
