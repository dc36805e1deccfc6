"""TURN credentials (app/services/turn.py): the "TURN REST API" scheme coturn checks with
`use-auth-secret` + `static-auth-secret`, handed to the browsers' pages and to the media peer."""
import base64
import hashlib
import hmac
import json
import re
import shutil
import subprocess
import time

import pytest

from app.services import turn
from tests.test_conference_call import bind_client, open_room, started

URLS = "turn:turn.example:3478?transport=udp, turns:turn.example:443?transport=tcp"
SECRET = "s3cret-shared-with-coturn"


def settings(**extra):
    return {"ICE_SERVERS": "[]", "TURN_URLS": URLS, "TURN_SECRET": SECRET, **extra}


def openssl_credential(secret, username):
    """What coturn computes (HMAC-SHA1 of the username, keyed by the secret, in base64),
    worked out by openssl rather than by Python's hmac."""
    digest = subprocess.run(["openssl", "dgst", "-sha1", "-hmac", secret, "-binary"],
                            input=username.encode(), capture_output=True, check=True).stdout
    return base64.b64encode(digest).decode()


def test_credential_is_expiry_and_label_signed_with_the_secret():
    now = 1_700_000_000
    [server] = turn.ice_servers("client-7", settings(), now=now)
    assert server["urls"] == ["turn:turn.example:3478?transport=udp",
                              "turns:turn.example:443?transport=tcp"]
    assert server["username"] == f"{now + 3600}:client-7"
    expected = base64.b64encode(hmac.new(SECRET.encode(), server["username"].encode(),
                                         hashlib.sha1).digest()).decode()
    assert server["credential"] == expected
    if shutil.which("openssl"):
        assert server["credential"] == openssl_credential(SECRET, server["username"])


def test_ttl_and_static_servers_come_first():
    static = [{"urls": "stun:stun.example:3478"}]
    servers = turn.ice_servers("media", settings(ICE_SERVERS=json.dumps(static),
                                                 TURN_TTL_SECONDS="600"))
    assert servers[0] == static[0]
    expiry, who = servers[1]["username"].split(":")
    assert who == "media"
    assert abs(int(expiry) - (time.time() + 600)) < 5


@pytest.mark.parametrize("missing", ["TURN_URLS", "TURN_SECRET"])
def test_no_turn_without_urls_and_secret(missing):
    assert turn.ice_servers("agent-1", settings(**{missing: ""})) == []


def test_transport_policy():
    assert turn.transport_policy({"ICE_TRANSPORT_POLICY": ""}) == "all"
    assert turn.transport_policy({"ICE_TRANSPORT_POLICY": "relay"}) == "relay"
    with pytest.raises(ValueError):
        turn.transport_policy({"ICE_TRANSPORT_POLICY": "none"})


def test_settings_fall_back_to_the_environment(monkeypatch):
    monkeypatch.setenv("TURN_URLS", "turn:127.0.0.1:3478")
    monkeypatch.setenv("TURN_SECRET", "x")
    [server] = turn.turn_servers("media", {})
    assert server["urls"] == ["turn:127.0.0.1:3478"]


def test_the_media_peer_gets_fresh_credentials_per_connection():
    from app.media.rooms import MediaSettings

    media = MediaSettings(turn=settings())
    [server] = media.rtc_configuration().iceServers
    assert server.urls == ["turn:turn.example:3478?transport=udp",
                           "turns:turn.example:443?transport=tcp"]
    assert server.username.endswith(":media")
    assert server.credential == turn.credential_for(SECRET, server.username)


def test_pages_hand_turn_credentials_and_policy_to_the_browsers(db, app, client, auth, agent,
                                                               factory, monkeypatch):
    for key, value in settings(ICE_TRANSPORT_POLICY="relay").items():
        monkeypatch.setitem(app.config, key, value)
    room = started(db, open_room(db, factory, agent), agent)
    auth.login(agent.email)
    check_page(client.get(f"/conferencias/{room.id}").get_data(as_text=True), f"agent-{room.id}")
    bind_client(client, room)
    check_page(client.get("/conferencia/dispositivos").get_data(as_text=True),
               f"client-{room.id}")


def check_page(html, who):
    import html as html_lib

    ice = json.loads(html_lib.unescape(re.search(r"data-ice='([^']*)'", html).group(1)))
    [server] = ice
    assert server["username"].endswith(":" + who)
    assert server["credential"] == turn.credential_for(SECRET, server["username"])
    assert 'data-ice-policy="relay"' in html


@pytest.mark.skipif(not shutil.which("turnserver"), reason="coturn not installed")
def test_coturn_accepts_the_credentials_and_refuses_others(tmp_path):
    """A real coturn with use-auth-secret: an allocation with the app's credentials gets a
    relayed address; a wrong password is refused (401)."""
    import asyncio

    from aioice import stun, turn as aioice_turn

    from tests.support.processes import free_port, wait_until

    port = free_port()
    conf = tmp_path / "turnserver.conf"
    conf.write_text("\n".join([
        "listening-ip=127.0.0.1", "relay-ip=127.0.0.1", f"listening-port={port}",
        "use-auth-secret", f"static-auth-secret={SECRET}", "realm=videoar.test", "no-cli",
        "no-tls", "no-dtls", "min-port=49160", "max-port=49260", "log-file=stdout", ""]))
    log = open(tmp_path / "turn.log", "wb")
    proc = subprocess.Popen(["turnserver", "-c", str(conf)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: b"listener" in (tmp_path / "turn.log").read_bytes()
                   or proc.poll() is not None, 15, message="coturn listening")
        [server] = turn.ice_servers("check", settings(TURN_URLS=f"turn:127.0.0.1:{port}"))

        async def allocate(password):
            transport, _ = await aioice_turn.create_turn_endpoint(
                asyncio.DatagramProtocol, server_addr=("127.0.0.1", port),
                username=server["username"], password=password, transport="udp")
            address = transport.get_extra_info("sockname")
            transport.close()
            return address

        async def main():
            for _ in range(50):   # the UDP listener may come up a moment after the log line
                try:
                    return await allocate(server["credential"])
                except (stun.TransactionTimeout, ConnectionError):
                    await asyncio.sleep(0.1)
            raise AssertionError("coturn never answered")

        assert asyncio.run(main())[0] == "127.0.0.1"
        with pytest.raises(stun.TransactionFailed, match="401"):
            asyncio.run(allocate("wrong"))
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
