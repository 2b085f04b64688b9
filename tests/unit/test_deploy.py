"""Production settings from the environment: `manage.py check --deploy --fail-level WARNING` passes
with the values of .env.example (and a real secret key), and fails with the developer defaults
or the placeholder key. The real gunicorn serving static files: tests/integration/test_production.py."""
import os
import secrets
import subprocess
import sys

from tests.support.workers import ROOT


def env_example() -> dict[str, str]:
    """The variables of .env.example, as docker compose reads them."""
    pairs = [line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return {name.strip(): value.strip() for name, value in pairs}


def check_deploy(variables: dict[str, str]) -> subprocess.CompletedProcess:
    # Only what is given here: none of the DJANGO_* of whoever runs the tests.
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(variables, DJANGO_SETTINGS_MODULE="searchsite.settings")
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def real_secret_key() -> str:
    return secrets.token_urlsafe(50)


def test_env_example_passes_the_deploy_check():
    result = check_deploy(env_example() | {"DJANGO_SECRET_KEY": real_secret_key()})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_env_example_placeholder_key_fails_the_deploy_check():
    variables = env_example()
    assert variables["DJANGO_SECRET_KEY"].startswith("django-insecure-")
    result = check_deploy(variables)
    assert result.returncode != 0
    assert "security.W009" in result.stderr


def test_developer_defaults_fail_the_deploy_check():
    """Debug off and a good key, nothing else set: each HTTPS setting is named."""
    result = check_deploy({"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": real_secret_key()})
    assert result.returncode != 0
    for warning in ("W004", "W008", "W012", "W016"):  # HSTS, SSL redirect, session and CSRF cookies
        assert f"security.{warning}" in result.stderr, result.stderr


def test_https_settings_come_from_the_environment():
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    code = ("from django.conf import settings as s; print(s.SECURE_PROXY_SSL_HEADER, s.SECURE_SSL_REDIRECT, "
            "s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.CSRF_TRUSTED_ORIGINS)")
    result = subprocess.run([sys.executable, "manage.py", "shell", "--no-imports", "-c", code], cwd=ROOT, capture_output=True,
                            text=True, env=env | env_example(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == ("('HTTP_X_FORWARDED_PROTO', 'https') True 31536000 True True "
                                     "['https://search.example.org']")
    bad = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                         env=env | {"DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https"}, timeout=120)
    assert bad.returncode != 0
    assert "DJANGO_SECURE_PROXY_SSL_HEADER must be a header name" in bad.stderr


def test_ssl_redirect_trusts_the_proxy_header_and_spares_health_probes(rf):
    """Django's SecurityMiddleware with this project's settings: plain http is sent to https, a
    request the proxy marked https is not, and /healthz stays reachable over http."""
    from django.conf import settings
    from django.middleware.security import SecurityMiddleware
    from django.test import override_settings

    with override_settings(SECURE_SSL_REDIRECT=True, SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https")):
        assert settings.SECURE_REDIRECT_EXEMPT  # the project's own exemption, not overridden here
        middleware = SecurityMiddleware(lambda request: None)
        redirect = middleware.process_request(rf.get("/api/search", {"q": "x"}))
        assert redirect.status_code == 301 and redirect["Location"] == "https://testserver/api/search?q=x"
        assert middleware.process_request(rf.get("/api/search", HTTP_X_FORWARDED_PROTO="https")) is None
        assert middleware.process_request(rf.get("/healthz")) is None
