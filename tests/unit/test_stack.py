"""What the stack is set up from, without the services running: scripts/services.py's handling of
the Elasticsearch password kept beside its data, docker-compose.yml against the settings, and bad
settings values (the services themselves: tests/integration/test_stack.py)."""
import os
import re
import subprocess
import sys

import yaml

from tests.support.workers import ROOT


def _services(tmp_path, code: str) -> subprocess.CompletedProcess:
    """Run `code` against scripts/services.py with its state and runtime folders in tmp_path."""
    env = dict(os.environ, SERVICES_DIR=str(tmp_path / "checkout-services"),
               ES_RUNTIME_DIR=str(tmp_path / "runtime"))
    script = f"import sys; sys.path.insert(0, {str(ROOT / 'scripts')!r}); import services\n{code}"
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)


def test_fresh_checkout_reuses_the_password_kept_with_old_data(tmp_path):
    # As root the data outlives the checkout; a fresh clone at the same path must open it
    # (CI once failed on a steady 401 here).
    runtime = tmp_path / "runtime"
    (runtime / "es-data").mkdir(parents=True)
    (runtime / "elastic-password").write_text("the-old-password\n")
    result = _services(tmp_path, "print(services.es_password())")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("the-old-password")
    assert (tmp_path / "checkout-services" / "elastic-password").read_text().strip() == "the-old-password"


def test_data_set_up_with_another_password_is_moved_aside_not_deleted(tmp_path):
    runtime = tmp_path / "runtime"
    (runtime / "es-data").mkdir(parents=True)
    (runtime / "es-data" / "segment").write_text("old data")
    (runtime / "elastic-password").write_text("the-old-password\n")
    (tmp_path / "checkout-services").mkdir()
    (tmp_path / "checkout-services" / "elastic-password").write_text("a-new-password\n")
    result = _services(tmp_path, "services.match_runtime_password()")
    assert result.returncode == 0, result.stderr
    assert "set up with another password" in result.stdout
    [previous] = runtime.glob("es-data.previous-*")
    assert (previous / "segment").read_text() == "old data"
    assert not (runtime / "es-data").exists()
    assert (runtime / "elastic-password").read_text().strip() == "a-new-password"
    assert (runtime / "elastic-password").stat().st_mode & 0o777 == 0o600


def test_an_empty_password_copy_is_unknown_not_a_mismatch(tmp_path):
    runtime = tmp_path / "runtime"
    (runtime / "es-data").mkdir(parents=True)
    (runtime / "elastic-password").write_text("")
    (tmp_path / "checkout-services").mkdir()
    (tmp_path / "checkout-services" / "elastic-password").write_text("the-password\n")
    result = _services(tmp_path, "services.match_runtime_password()")
    assert result.returncode == 0, result.stderr
    assert (runtime / "es-data").exists() and not list(runtime.glob("es-data.previous-*"))
    assert (runtime / "elastic-password").read_text().strip() == "the-password"


def _settings_variables() -> set[str]:
    source = (ROOT / "searchsite" / "settings.py").read_text()
    # env("NAME"...), env_int("NAME"...), env_seconds(...): every helper of the settings module.
    return set(re.findall(r'env(?:_[a-z]+)?\("([A-Z0-9_]+)"', source))


def test_docker_compose_matches_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services_ = compose["services"]
    assert {"elasticsearch", "redis", "postgres", "web", "worker-embed", "worker-rerank", "worker-train",
            "beat"} <= set(services_)
    # The periodic reconcile runs from the same Celery app as the Procfile's beat.
    assert services_["beat"]["command"].startswith("celery -A searchsite beat")
    assert services_["elasticsearch"]["image"].startswith("docker.elastic.co/elasticsearch/elasticsearch:9.")
    devices = services_["worker-embed"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    known = _settings_variables()
    for name in ("web", "worker-embed", "worker-rerank", "worker-train", "beat"):
        env = services_[name]["environment"]
        names = set(env) if isinstance(env, dict) else {item.split("=", 1)[0] for item in env}
        assert {"DATABASE_URL", "ELASTICSEARCH_URL", "ELASTICSEARCH_PASSWORD", "REDIS_URL"} <= names
        unknown = names - known - {"HF_HUB_OFFLINE", "DJANGO_SETTINGS_MODULE"}
        assert not unknown, f"{name} sets variables the settings never read: {unknown}"
    example = [line.split("=", 1)[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")]
    assert set(example) - known - {"POSTGRES_PASSWORD", "HF_HUB_OFFLINE"} == set()


def test_workers_take_queue_names_from_the_environment():
    """docker compose and the Procfile start the workers on the queues the settings route to."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines()
                    if line and not line.startswith("#"))
    for service, process, variable, default in (("worker-embed", "embed", "EMBED_QUEUE", "embed"),
                                                ("worker-rerank", "rerank", "RERANK_QUEUE", "rerank"),
                                                ("worker-train", "train", "TRAIN_QUEUE", "train")):
        option = f"-Q ${{{variable}:-{default}}} "
        assert option in compose["services"][service]["command"]
        assert option in procfile[process]
        # The web and beat route by the same names.
        assert compose["services"]["web"]["environment"][variable] == f"${{{variable}:-{default}}}"


def test_bad_settings_values_fail_clearly():
    env = dict(os.environ, EMBEDDING_BATCH_SIZE="many")
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "EMBEDDING_BATCH_SIZE must be an integer, not 'many'" in result.stderr
