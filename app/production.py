"""Production mode: the command of each process and the variables it needs, in one place.

The systemd units (deploy/systemd/) and the compose file (deploy/compose.yaml) run exactly these
commands with the variables of /etc/videoar/videoar.env (tests/test_deploy_files.py checks it);
docs/deploy.md walks through a server. `${NAME}` in an argv is a variable of the env file:
systemd substitutes it in ExecStart, compose interpolates it (`--env-file`), `argv()` does it
here for a Python caller such as app/launcher.py.

Every service runs on the host's network (compose: `network_mode: host`), so the addresses are
the same in both: web on 127.0.0.1:5000 behind Caddy, PostgreSQL on 127.0.0.1:5432, Redis on
127.0.0.1:6379, the media process and coturn on the host's UDP ports.
"""
import re

APP_DIR = "/opt/videoar"
VENV_BIN = f"{APP_DIR}/.venv/bin"
ENV_FILE = "/etc/videoar/videoar.env"

# name → argv. The web process is gunicorn's gthread worker (threads serve flask-sock's
# WebSockets; each call holds two of them), trusting the X-Forwarded-* of the local proxy.
COMMANDS = {
    "web": [f"{VENV_BIN}/gunicorn", "--bind", "${WEB_BIND}", "--worker-class", "gthread",
            "--workers", "${WEB_WORKERS}", "--threads", "${WEB_THREADS}", "--timeout", "120",
            "--forwarded-allow-ips", "127.0.0.1", "--access-logfile", "-",
            "--logger-class", "app.logging_setup.GunicornLogger", "wsgi:app"],
    # RQ worker with RQ's scheduler, and the cron child of the periodic jobs (worker.py)
    "worker": [f"{VENV_BIN}/python", "worker.py"],
    "media": [f"{VENV_BIN}/python", "-m", "app.media"],
    "turn": ["/usr/bin/turnserver", "-c", "/etc/videoar/turnserver.conf",
             "--static-auth-secret=${TURN_SECRET}", "--realm=${VIDEOAR_DOMAIN}"],
}
# Run before web starts (systemd: ExecStartPre of videoar-web; compose: the `migrate` service).
MIGRATE = [f"{VENV_BIN}/flask", "--app", "wsgi.py", "db", "upgrade"]

# What the app's processes read from the env file (web, worker, media: the same file).
REQUIRED = [
    "VIDEOAR_DOMAIN", "PUBLIC_URL", "SECRET_KEY", "KEYS_PASSPHRASE", "DATA_KEYS",
    "DATABASE_URL", "REDIS_URL", "VIDEOAR_INSTANCE", "WEB_BIND", "WEB_WORKERS", "WEB_THREADS",
    "FORCE_HTTPS", "PROXY_HOPS", "LOG_FORMAT", "TURN_URLS", "TURN_SECRET", "TURN_TTL_SECONDS", "ICE_TRANSPORT_POLICY",
    "MEDIA_ANNOUNCED_ADDRESS", "MEDIA_PORT_MIN", "MEDIA_PORT_MAX", "MEDIA_CAPACITY",
]
# Set per process (not in the env file): the media health port of each media instance.
PER_PROCESS = {"media": ["MEDIA_HEALTH_PORT"]}

_VAR = re.compile(r"\$\{([A-Z0-9_]+)\}")


def variables(name: str) -> set[str]:
    """The `${NAME}`s a command uses."""
    return {m for arg in COMMANDS[name] for m in _VAR.findall(arg)}


def argv(name: str, env, venv_bin: str | None = None) -> list[str]:
    """The command `name` with its `${NAME}`s taken from `env`, and, if given, another
    virtualenv's bin directory than /opt/videoar/.venv/bin (e.g. the launcher's)."""
    out = []
    for arg in COMMANDS[name]:
        if venv_bin and arg.startswith(VENV_BIN + "/"):
            arg = str(venv_bin).rstrip("/") + arg[len(VENV_BIN):]
        out.append(_VAR.sub(lambda m: str(env[m.group(1)]), arg))
    return out
