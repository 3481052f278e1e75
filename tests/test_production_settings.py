"""Production settings, checked the way a deployment runs them: in a fresh process with only the
production environment (OMOIOS_ENV=production, SECRET_KEY, ALLOWED_HOSTS, DATABASE_URL)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The suite's own PostgreSQL (the deploy checks inspect the database features)."""
    from django.conf import settings

    return settings.DATABASE_URL


def production_env(**extra) -> dict:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "OMOIOS_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "ALLOWED_HOSTS": "omoios.example.com",
        "DATABASE_URL": database_url(),
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def manage(*args, env: dict, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_check_deploy_passes_without_warnings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_the_default_secret():
    result = manage("check", env=production_env(SECRET_KEY=None))
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_collectstatic_builds_the_whitenoise_manifest(tmp_path):
    result = manage("collectstatic", "--noinput", env=production_env(STATIC_ROOT=str(tmp_path)), timeout=300)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "staticfiles.json").read_text())
    assert any(name.startswith("admin/") for name in manifest["paths"])
    assert any(name.startswith("drf_spectacular_sidecar/swagger-ui-dist/") for name in manifest["paths"])


def test_production_logs_are_json_lines():
    code = "import logging; logging.getLogger('omoi_site.probe').warning('hello %s', 'deploy')"
    result = manage("shell", "-c", code, env=production_env())
    assert result.returncode == 0, result.stderr
    line = [line for line in result.stderr.splitlines() if "hello" in line][-1]
    record = json.loads(line)
    assert (
        record["level"] == "WARNING" and record["logger"] == "omoi_site.probe" and record["message"] == "hello deploy"
    )


def test_railway_configs_describe_web_and_worker():
    web = json.loads((BASE_DIR / "railway.json").read_text())
    worker = json.loads((BASE_DIR / "railway.worker.json").read_text())
    assert "uvicorn omoi_site.asgi:application" in web["deploy"]["startCommand"]
    assert "migrate" in web["deploy"]["startCommand"] and "collectstatic" in web["deploy"]["startCommand"]
    assert web["deploy"]["healthcheckPath"] == "/healthz"
    assert worker["deploy"]["startCommand"].endswith("manage.py worker")


@pytest.mark.parametrize("path", ["/api/schema/", "/healthz"])
def test_production_ssl_redirect_exempts_only_health(path, settings, client, db):
    # The health check is probed over plain HTTP inside the platform; everything else is redirected.
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    response = client.get(path)
    assert (response.status_code == 301) == (path != "/healthz")
