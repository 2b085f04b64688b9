"""scripts/services.py's OpenSearch parts that need no running node: choosing it, and refusing
a k-NN plugin zip of another version before opensearch-plugin is run (the node itself:
scripts/opensearch_probe.py)."""
import os
import subprocess
import sys
import zipfile

from tests.support.workers import ROOT

SERVICES = ROOT / "scripts" / "services.py"


def _run(tmp_path, *args, code: str | None = None, **env) -> subprocess.CompletedProcess:
    environ = dict(os.environ, SERVICES_DIR=str(tmp_path / "state"), ES_RUNTIME_DIR=str(tmp_path / "es"),
                   OPENSEARCH_RUNTIME_DIR=str(tmp_path / "os"), **env)
    if code is not None:
        script = f"import sys; sys.path.insert(0, {str(SERVICES.parent)!r}); import services\n{code}"
        return subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True)
    return subprocess.run([sys.executable, str(SERVICES), *args], env=environ, capture_output=True, text=True)


def test_a_bad_search_engine_is_refused_before_anything_starts(tmp_path):
    result = _run(tmp_path, "start", SEARCH_ENGINE="solr")
    assert result.returncode == 1
    assert "SEARCH_ENGINE='solr' is not one of elasticsearch, opensearch" in result.stderr
    assert result.stdout == ""  # neither Redis nor Elasticsearch was looked at


def test_an_unknown_service_names_the_known_ones(tmp_path):
    result = _run(tmp_path, "start", "solr")
    assert result.returncode == 1
    assert "unknown service 'solr': es, opensearch, redis or all" in result.stderr


def _plugin_zip(path, name: str, opensearch_version: str):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("plugin-descriptor.properties",
                    f"# comment=ignored\nname={name}\nversion={opensearch_version}.0\n"
                    f"opensearch.version={opensearch_version}\nextended.plugins=lang-painless,transport-grpc\n")
    return path


def test_a_plugin_built_for_another_server_version_is_refused(tmp_path):
    other = _plugin_zip(tmp_path / "knn.zip", "opensearch-knn", "3.4.0")
    result = _run(tmp_path, code=f"services.check_plugin_zip(services.Path({str(other)!r}), 'opensearch-knn')")
    assert result.returncode == 1
    assert "plugin 'opensearch-knn' for OpenSearch '3.4.0', not 'opensearch-knn' for 3.5.0" in result.stderr


def test_the_plugin_descriptor_is_read_with_what_it_extends(tmp_path):
    ours = _plugin_zip(tmp_path / "knn.zip", "opensearch-knn", "3.5.0")
    result = _run(tmp_path, code=f"print(services.check_plugin_zip(services.Path({str(ours)!r}), 'opensearch-knn'))")
    assert result.returncode == 0, result.stderr
    assert "'extended.plugins': 'lang-painless,transport-grpc'" in result.stdout
    assert "comment" not in result.stdout


def test_a_zip_that_is_no_plugin_is_refused(tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    result = _run(tmp_path, code=f"services.plugin_descriptor(services.Path({str(junk)!r}))")
    assert result.returncode == 1
    assert "is not an OpenSearch plugin zip" in result.stderr and "delete it to fetch it again" in result.stderr
