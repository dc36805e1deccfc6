"""The systemd units and the compose file run the commands of app/production.py with the same
variables, and the env file example lists them all."""
import configparser
import re
import shlex
import subprocess
import shutil

import pytest
import yaml

from app import production
from tests.support.processes import ROOT

DEPLOY = ROOT / "deploy"
UNITS = {"web": "videoar-web.service", "worker": "videoar-worker.service",
         "media": "videoar-media@.service", "turn": "videoar-turn.service"}
SERVICES = {"web": "web", "worker": "worker", "media": "media", "turn": "coturn"}
VAR = re.compile(r"\$\{([A-Z0-9_]+)\}")


def unit(name):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(DEPLOY / "systemd" / name)
    return parser


def compose():
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def env_example():
    names = set()
    for line in (DEPLOY / "videoar.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            names.add(line.split("=", 1)[0].strip())
    return names


def per_process(section: dict | list | None) -> set:
    if not section:
        return set()
    if isinstance(section, dict):
        return set(section)
    return {item.split("=", 1)[0] for item in section}


@pytest.mark.parametrize("name", list(UNITS))
def test_units_and_compose_run_the_same_commands(name):
    service = unit(UNITS[name])["Service"]
    assert shlex.split(service["ExecStart"]) == production.COMMANDS[name]
    assert compose()["services"][SERVICES[name]]["command"] == production.COMMANDS[name]
    assert service["EnvironmentFile"] == production.ENV_FILE
    env_files = compose()["services"][SERVICES[name]].get("env_file")
    if name != "turn":   # coturn reads its secret and realm from the command line only
        assert env_files == production.ENV_FILE
        assert service["WorkingDirectory"] == production.APP_DIR == \
            compose()["services"][SERVICES[name]]["working_dir"]


@pytest.mark.parametrize("name", ["web", "worker", "media"])
def test_same_per_process_variables(name):
    unit_vars = {line.split("=", 1)[0] for line in
                 unit(UNITS[name])["Service"].get("Environment", "").split() if "=" in line}
    compose_vars = per_process(compose()["services"][SERVICES[name]].get("environment"))
    assert unit_vars == compose_vars == set(production.PER_PROCESS.get(name, []))


def test_migrations_run_before_web():
    assert shlex.split(unit(UNITS["web"])["Service"]["ExecStartPre"]) == production.MIGRATE
    services = compose()["services"]
    assert services["migrate"]["command"] == production.MIGRATE
    assert services["web"]["depends_on"]["migrate"]["condition"] == \
        "service_completed_successfully"


def test_every_variable_is_in_the_env_file_example():
    listed = env_example()
    assert set(production.REQUIRED) <= listed
    used = set()
    for name in production.COMMANDS:
        used |= production.variables(name)
    used |= set(VAR.findall((DEPLOY / "compose.yaml").read_text()))
    for path in (DEPLOY / "systemd").glob("*.service"):
        used |= set(VAR.findall(path.read_text()))
    assert used <= listed, used - listed
    # every variable the app reads is a setting of app.config (or of the TURN module)
    from app.config import Config

    from app.services import turn  # noqa: F401
    app_vars = set(production.REQUIRED) - {"VIDEOAR_DOMAIN", "VIDEOAR_INSTANCE", "WEB_BIND",
                                           "WEB_WORKERS", "WEB_THREADS", "TURN_URLS",
                                           "TURN_SECRET", "TURN_TTL_SECONDS",
                                           "ICE_TRANSPORT_POLICY", "DATABASE_URL"}
    missing = {v for v in app_vars if not hasattr(Config, v)}
    assert not missing, missing


def test_target_wants_every_unit():
    wants = unit("videoar.target")["Unit"]["Wants"].split()
    assert {"videoar-web.service", "videoar-worker.service", "videoar-media@1.service",
            "videoar-turn.service"} <= set(wants)
    for name in ("videoar-web.service", "videoar-worker.service", "videoar-media@.service"):
        assert unit(name)["Install"]["WantedBy"] == "videoar.target"


def test_argv_expands_variables_for_a_python_caller():
    argv = production.argv("web", {"WEB_BIND": "127.0.0.1:5000", "WEB_WORKERS": "2",
                                   "WEB_THREADS": "24"}, venv_bin="/srv/x/.venv/bin")
    assert argv[:3] == ["/srv/x/.venv/bin/gunicorn", "--bind", "127.0.0.1:5000"]
    assert "${" not in " ".join(argv)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze")
def test_units_are_valid_for_systemd(tmp_path):
    for path in (DEPLOY / "systemd").glob("videoar*"):
        (tmp_path / path.name).write_text(path.read_text())
    result = subprocess.run(["systemd-analyze", "verify", "--man=no",
                             *[str(p) for p in tmp_path.glob("videoar-w*.service")]],
                            capture_output=True, text=True)
    assert "Unknown key" not in result.stderr and "Invalid" not in result.stderr, result.stderr


@pytest.mark.skipif(not shutil.which("caddy"), reason="caddy not installed")
@pytest.mark.parametrize("name", ["Caddyfile", "Caddyfile.lan"])
def test_caddyfiles_are_valid(name, tmp_path):
    result = subprocess.run(["caddy", "validate", "--adapter", "caddyfile", "--config",
                             str(DEPLOY / name)], capture_output=True, text=True,
                            env={"VIDEOAR_DOMAIN": "videoar.test", "HOME": str(tmp_path),
                                 "XDG_DATA_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
