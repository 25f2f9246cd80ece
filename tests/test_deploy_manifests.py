"""deploy/kubernetes and deploy/cloudrun: the shipped manifests agree with the code they deploy.

Pure: files and functions only, no cluster, Redis, Docker or network.
"""

from __future__ import annotations

import re
import shlex
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tinytown.api.startup import startup_errors
from tinytown.config import load_config
from tinytown.core import defaults
from tinytown.core.scaling import ScalingInput, scaling_signal
from tinytown.scaler import cloudrun
from tinytown.scaler import defaults as scaler_defaults

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
CLOUDRUN = ROOT / "deploy" / "cloudrun"
# Python files whose code reads the environment (tests excluded: they may name anything).
SOURCES = [
    *(ROOT / "tinytown").rglob("*.py"),
    ROOT / "agent_worker.py",
    ROOT / "townhall.py",
    ROOT / "scaler.py",
]
ENV_NAME = re.compile(r"\b(TINYTOWN_[A-Z0-9_]*[A-Z0-9]|REDIS_URL)\b")
# Cloud Run stops a container about 10 s after SIGTERM (docs/deploy.md, reference/peers.md §4.1).
CLOUD_RUN_SIGTERM_GRACE_SECS = 10
APP_UID = 10001


def yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml"))


def documents(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def k8s_objects() -> list[dict]:
    return [d for p in yaml_files(K8S) if p.name != "kustomization.yaml" for d in documents(p)]


def k8s_object(kind: str, name: str | None = None) -> dict:
    found = [
        d
        for d in k8s_objects()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''} in {K8S}, found {len(found)}"
    return found[0]


def scaled_job() -> dict:
    return k8s_object("ScaledJob")


def worker_pod() -> dict:
    return scaled_job()["spec"]["jobTargetRef"]["template"]["spec"]


def townhall_pod() -> dict:
    return k8s_object("Deployment", "tinytown-townhall")["spec"]["template"]["spec"]


def load_toml(text: str, tmp_path: Path):
    (tmp_path / defaults.CONFIG_FILENAME).write_text(text)
    return load_config(tmp_path, env={})


def shipped_configs() -> dict[str, str]:
    configmap = k8s_object("ConfigMap", "tinytown-config")
    return {
        "kubernetes": configmap["data"][defaults.CONFIG_FILENAME],
        "cloudrun": (CLOUDRUN / defaults.CONFIG_FILENAME).read_text(),
    }


def signal(**counts) -> dict:
    base = {
        "town": "t",
        "now": datetime.now(UTC),
        "pending_tasks": 0,
        "in_flight_tasks": 0,
        "agents_by_state": {},
        "idle_last_active": [],
        "max_agents": 10,
        "idle_timeout_secs": 300,
    }
    return scaling_signal(ScalingInput(**{**base, **counts}))


# --- every file is well-formed ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", yaml_files(K8S) + yaml_files(CLOUDRUN), ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_every_manifest_parses_as_yaml(path):
    docs = documents(path)
    assert docs, f"{path} holds no YAML document"
    assert all(isinstance(d, dict) and d.get("kind") for d in docs)


def test_kustomization_lists_exactly_the_manifests_in_its_folder():
    kustomization = documents(K8S / "kustomization.yaml")[0]
    listed = kustomization["resources"]
    on_disk = [
        p.name
        for p in yaml_files(K8S)
        if p.name != "kustomization.yaml" and not p.name.endswith(".example.yaml")
    ]
    assert sorted(listed) == sorted(on_disk)
    assert len(listed) == len(set(listed))


def test_kustomize_never_applies_a_secret_so_apply_k_cannot_overwrite_real_ones():
    # The Secrets are templates applied on their own (docs/deploy.md step 3); a Secret among
    # the resources would put its placeholders over the real values at every `apply -k`.
    listed = documents(K8S / "kustomization.yaml")[0]["resources"]
    assert not [n for n in listed for d in documents(K8S / n) if d["kind"] == "Secret"]
    assert {d["kind"] for d in documents(K8S / "secrets.example.yaml")} == {"Secret"}
    assert "deploy/kubernetes/secrets.yaml" in (ROOT / ".gitignore").read_text().splitlines()


def test_kustomization_images_name_the_images_the_manifests_use():
    used = {
        c["image"].rsplit(":", 1)[0]
        for pod in (townhall_pod(), worker_pod())
        for c in pod["containers"]
    }
    named = {i["name"] for i in documents(K8S / "kustomization.yaml")[0]["images"]}
    assert named == used


def test_manifests_carry_no_namespace_of_their_own():
    assert all("namespace" not in d["metadata"] for d in k8s_objects())


# --- environment and configuration --------------------------------------------------------------


def test_every_tinytown_variable_in_the_manifests_is_read_by_the_code():
    code = "\n".join(p.read_text() for p in SOURCES)
    named = {
        m for p in yaml_files(K8S) + yaml_files(CLOUDRUN) for m in ENV_NAME.findall(p.read_text())
    }
    assert "REDIS_URL" in named
    unread = sorted(n for n in named if f'"{n}"' not in code and f"'{n}'" not in code)
    assert not unread, f"set in deploy/ but read nowhere in the code: {unread}"


@pytest.mark.parametrize("engine", ["kubernetes", "cloudrun"])
def test_shipped_tinytown_toml_loads_and_passes_townhalls_start_up_rules(engine, tmp_path):
    config = load_toml(shipped_configs()[engine], tmp_path)
    assert config.file is not None
    # Pods bind all interfaces; townhall refuses that without auth.
    assert startup_errors(config, binds=["0.0.0.0:8080"]) == []
    assert config.townhall.auth.mode != "none"


@pytest.mark.parametrize("engine", ["kubernetes", "cloudrun"])
def test_shipped_tinytown_toml_names_the_town_explicitly(engine):
    # Townhall and workers read it from different directories, so the directory-name default
    # would put them in two different towns.
    assert re.search(r'(?m)^name\s*=\s*"[^"]+"', shipped_configs()[engine])


def test_secret_templates_hold_placeholders_and_a_tls_redis_url():
    secrets = [d for d in k8s_objects() if d["kind"] == "Secret"]
    assert secrets
    for secret in secrets:
        assert all("REPLACE_ME" in value for value in secret["stringData"].values()), secret[
            "metadata"
        ]["name"]
    url = urlsplit(k8s_object("Secret", "tinytown-redis")["stringData"]["REDIS_URL"])
    assert url.scheme == "rediss"
    assert url.password == "REPLACE_ME"


# --- the KEDA trigger reads the scaling signal ---------------------------------------------------


def metrics_api_trigger() -> dict:
    triggers = [t for t in scaled_job()["spec"]["triggers"] if t["type"] == "metrics-api"]
    assert len(triggers) == 1
    return triggers[0]["metadata"]


def test_keda_value_location_names_a_numeric_field_of_the_scaling_signal():
    location = metrics_api_trigger()["valueLocation"]
    doc = signal(pending_tasks=2, in_flight_tasks=1)
    assert location in doc
    assert isinstance(doc[location], int) and not isinstance(doc[location], bool)


def test_keda_metric_counts_in_flight_work_so_the_default_job_strategy_is_right():
    # ScaledJob's default strategy creates (metric − running Jobs): correct only when the metric
    # already includes the tasks running Jobs hold. Busy workers alone must keep it up.
    location = metrics_api_trigger()["valueLocation"]
    assert signal(in_flight_tasks=3, agents_by_state={"working": 3})[location] == 3
    assert signal(pending_tasks=2, in_flight_tasks=3, agents_by_state={"working": 3})[location] == 5
    assert signal()[location] == 0
    assert scaled_job()["spec"].get("scalingStrategy", {}).get("strategy", "default") == "default"
    assert float(metrics_api_trigger()["targetValue"]) == 1


def test_keda_trigger_url_is_townhalls_service_in_the_kustomized_namespace():
    url = metrics_api_trigger()["url"]
    service = k8s_object("Service", "tinytown-townhall")
    namespace = documents(K8S / "kustomization.yaml")[0]["namespace"]
    port = service["spec"]["ports"][0]["port"]
    assert (
        url
        == f"http://{service['metadata']['name']}.{namespace}.svc.cluster.local:{port}/api/scaling"
    )


def keda_auth_parameters() -> dict[str, dict]:
    """The ScaledJob trigger's TriggerAuthentication, as {parameter: secretTargetRef entry}."""
    trigger = next(t for t in scaled_job()["spec"]["triggers"] if t["type"] == "metrics-api")
    auth = k8s_object("TriggerAuthentication", trigger["authenticationRef"]["name"])
    return {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}


def test_keda_trigger_authenticates_through_a_trigger_authentication_that_names_a_secret_key():
    # ScaledJob authenticationRef -> TriggerAuthentication -> Secret name and key: one chain.
    refs = keda_auth_parameters()
    # KEDA's metrics-api: authMode apiKey reads parameter "apiKey", bearer reads "token".
    wanted = {"apiKey": "apiKey", "bearer": "token"}[metrics_api_trigger()["authMode"]]
    assert set(refs) == {wanted}
    secret = k8s_object("Secret", refs[wanted]["name"])
    assert refs[wanted]["key"] in secret["stringData"]


def test_keda_sends_its_key_in_a_header_townhall_reads():
    trigger = metrics_api_trigger()
    if trigger["authMode"] == "apiKey":
        assert trigger.get("method", "header") == "header"
        header = trigger["keyParamName"]
    else:
        header = "Authorization"  # bearer: Authorization: Bearer <token>
    auth_code = (ROOT / "tinytown" / "api" / "access.py").read_text()
    assert f'request.headers.get("{header}")' in auth_code


def test_the_town_config_holds_a_read_only_key_for_keda(tmp_path):
    config = load_toml(shipped_configs()["kubernetes"], tmp_path)
    (keda,) = [k for k in config.townhall.auth.keys if k.name == "keda"]
    assert tuple(keda.scopes) == ("town.read",)  # /api/scaling needs no more


def test_scaledjob_cap_matches_max_agents(tmp_path):
    config = load_toml(shipped_configs()["kubernetes"], tmp_path)
    assert scaled_job()["spec"]["maxReplicaCount"] == config.max_agents


def test_editing_the_scaledjob_does_not_delete_running_workers():
    assert scaled_job()["spec"]["rollout"]["strategy"] == "gradual"


# --- workers retire themselves; shutdown fits the grace period -----------------------------------


def test_worker_grace_period_covers_drain_and_cli_stop(tmp_path):
    config = load_toml(shipped_configs()["kubernetes"], tmp_path)
    needed = config.agent.drain_timeout_secs + defaults.CLI_STOP_GRACE_SECS
    assert worker_pod()["terminationGracePeriodSeconds"] > needed
    assert worker_pod()["terminationGracePeriodSeconds"] > defaults.DRAIN_TIMEOUT_SECS


def test_cloud_run_drain_fits_its_sigterm_window(tmp_path):
    config = load_toml(shipped_configs()["cloudrun"], tmp_path)
    assert (
        config.agent.drain_timeout_secs + defaults.CLI_STOP_GRACE_SECS
        < CLOUD_RUN_SIGTERM_GRACE_SECS
    )


def test_workers_end_on_their_idle_exit_and_a_failed_one_backs_off_in_its_own_pod(tmp_path):
    # OnFailure: exit 0 (the idle exit) completes the Job; a failure (exit 3 or 4, OOM, the
    # liveness probe) restarts the container with back-off while the Job counts as running, so
    # KEDA does not start a fresh pod for a broken configuration at every poll.
    assert worker_pod()["restartPolicy"] == "OnFailure"
    assert scaled_job()["spec"]["jobTargetRef"]["backoffLimit"] >= 1
    assert load_toml(shipped_configs()["kubernetes"], tmp_path).agent.idle_timeout_secs > 0


def test_worker_liveness_is_the_scalers_healthcheck_on_a_health_file_it_can_write():
    (container,) = worker_pod()["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    path = env[scaler_defaults.HEALTH_FILE_ENV]
    assert path == scaler_defaults.HEALTH_FILE
    # the root is read-only: the file must be on a mounted, writable volume
    mounts = [m for m in container["volumeMounts"] if not m.get("readOnly")]
    assert any(Path(path).is_relative_to(m["mountPath"]) for m in mounts)
    probe = container["livenessProbe"]
    assert probe["exec"]["command"] == shlex.split(scaler_defaults.HEALTHCHECK)
    assert probe["timeoutSeconds"] >= scaler_defaults.HEALTHCHECK_TIMEOUT_SECS
    assert probe["failureThreshold"] >= 2  # two stale looks in a row, as the Docker healthcheck


def test_worker_writes_the_town_directory_on_a_volume_with_the_config_inside(tmp_path):
    config = load_toml(shipped_configs()["kubernetes"], tmp_path)
    assert config.path(config.agent.workspace_dir).is_relative_to(
        config.root
    )  # .tt/ under /workspace
    mounts = {m["mountPath"]: m for m in worker_pod()["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in worker_pod()["volumes"]}
    assert "emptyDir" in volumes[mounts["/workspace"]["name"]]
    assert mounts[f"/workspace/{defaults.CONFIG_FILENAME}"]["subPath"] == defaults.CONFIG_FILENAME


# --- pods ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("pod", [townhall_pod, worker_pod], ids=["townhall", "agent-worker"])
def test_pods_run_as_the_images_non_root_user_on_a_read_only_root(pod):
    spec = pod()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == APP_UID
    for container in spec["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert "memory" in container["resources"]["limits"] and container["resources"]["requests"]


@pytest.mark.parametrize("pod", [townhall_pod, worker_pod], ids=["townhall", "agent-worker"])
def test_pods_get_no_service_link_variables_in_the_tinytown_namespace(pod):
    assert pod()["enableServiceLinks"] is False


def test_townhall_probes_liveness_and_readiness_on_its_port():
    container = townhall_pod()["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["ports"][0]["containerPort"] == int(env["TINYTOWN_REST_PORT"])


def test_cloud_run_townhall_listens_on_the_images_port():
    dockerfile_port = int(
        re.search(r"TINYTOWN_REST_PORT=(\d+)", (ROOT / "Dockerfile").read_text()).group(1)
    )
    service = documents(CLOUDRUN / "townhall.service.yaml")[0]
    container = service["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == dockerfile_port
    assert container["startupProbe"]["httpGet"]["path"] == "/livez"
    env = {e["name"]: e for e in container["env"]}
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "latest"


def test_cloud_run_townhall_keeps_an_instance_with_cpu_between_requests():
    # Its keeper, mission dispatcher and notifier work between requests: at zero instances or
    # with CPU only during requests, missions stall and pings wait (docs/deploy.md).
    service = documents(CLOUDRUN / "townhall.service.yaml")[0]
    annotations = service["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["autoscaling.knative.dev/minScale"]) >= 1
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"


def test_cloud_run_images_are_the_ones_docs_deploy_builds_and_pushes():
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    pushed = set(re.findall(r"docker push \$REGISTRY/([a-z-]+):\$TAG", deploy_doc))
    assert pushed == {"tinytown-townhall", "tinytown-agent-worker"}
    for path in (CLOUDRUN / "townhall.service.yaml", CLOUDRUN / "scaler-job.yaml"):
        (image,) = re.findall(r"(?m)^\s*image:\s*(\S+)", path.read_text())
        name, tag = image.rsplit("/", 1)[1].split(":")
        assert (name, tag) == ("tinytown-townhall", "REPLACE_ME_TAG"), path.name
    assert "--image=$REGISTRY/tinytown-agent-worker:$TAG" in deploy_doc


# --- Cloud Run: the scaling driver is a job users apply -------------------------------------------


def scaler_job_container() -> dict:
    (job,) = documents(CLOUDRUN / "scaler-job.yaml")
    assert (job["apiVersion"], job["kind"]) == ("run.googleapis.com/v1", "Job")
    (container,) = job["spec"]["template"]["spec"]["template"]["spec"]["containers"]
    return container


def test_cloud_run_scaler_job_runs_one_pass_of_the_driver_under_the_images_init():
    container = scaler_job_container()
    assert "command" not in container  # the image's ENTRYPOINT (tini) stays
    python, flag, m, module, *args = container["args"]
    assert (python, flag, m, module) == ("python", "-P", "-m", cloudrun.__name__)
    parsed = cloudrun.build_parser().parse_args(args)
    assert parsed.once is True


def test_cloud_run_scaler_job_names_the_worker_job_that_docs_deploy_creates():
    env = {e["name"]: e["value"] for e in scaler_job_container()["env"]}
    job = env[cloudrun.ENV["job"]]
    assert re.fullmatch(r"projects/[^/]+/locations/[^/]+/jobs/[a-z0-9-]+", job)
    deploy_doc = (ROOT / "docs" / "deploy.md").read_text()
    assert f"gcloud run jobs deploy {job.rsplit('/', 1)[1]} " in deploy_doc
    assert env[cloudrun.ENV["url"]].startswith("https://")
    assert set(env) <= set(cloudrun.ENV.values())


def test_cloud_run_scaler_job_is_not_retried_and_outlasts_a_pass():
    (job,) = documents(CLOUDRUN / "scaler-job.yaml")
    execution = job["spec"]["template"]["spec"]
    task = execution["template"]["spec"]
    assert (execution["taskCount"], execution["parallelism"], task["maxRetries"]) == (1, 1, 0)
    # token, executions list (one page) and run: three calls at most HTTP_TIMEOUT_SECS each
    assert int(task["timeoutSeconds"]) > 4 * cloudrun.HTTP_TIMEOUT_SECS


def test_cloud_run_scaler_job_cap_matches_max_agents(tmp_path):
    env = {e["name"]: e["value"] for e in scaler_job_container()["env"]}
    config = load_toml(shipped_configs()["cloudrun"], tmp_path)
    assert int(env[cloudrun.ENV["max_workers"]]) == config.max_agents
