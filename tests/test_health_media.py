"""Health checks and the media process talking to web over Redis."""
import json
import subprocess
import sys
import urllib.request

from app.media import client as media_client
from tests.support.processes import ROOT, free_port, wait_until


def test_web_health_reports_database_and_redis(client):
    response = client.get("/healthz")
    body = response.get_json()
    assert body["database"] == "ok" and body["redis"] == "ok"
    assert body["media"] == "down"
    assert response.status_code == 200


def test_media_process_starts_answers_health_and_redis(app, process_env, tmp_path, client):
    port = free_port()
    env = {**process_env, "MEDIA_HEALTH_PORT": str(port)}
    log = open(tmp_path / "media.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "app.media"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        def healthy():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    return json.loads(r.read())
            except OSError:
                return None

        status = wait_until(healthy, timeout=20, message="media health check")
        assert status["status"] == "ok"
        from app.jobs import redis_connection

        with app.app_context():
            reply = media_client.call(redis_connection(), "ping", timeout=5)
        assert reply["op"] == "pong" and reply["media"] == status["media"]
        wait_until(lambda: client.get("/healthz").get_json()["media"] == "ok", timeout=15,
                   message="web seeing the media heartbeat")
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
    assert proc.returncode == 0
    assert "media process stopped" in (tmp_path / "media.log").read_text()
