"""Who may open the call's WebSockets, against the real web process (gunicorn + flask-sock):
an upgrade must come from our own origin and carry the right session; anything else is closed
before a connection to the room is recorded."""
import json
import secrets

import pytest
import simple_websocket
from sqlalchemy import select

from app.models import Conference, ConferenceConnection, utcnow
from tests.conftest import STAFF_PASSWORD

pytestmark = [pytest.mark.slow, pytest.mark.one_database]


@pytest.fixture
def room(db, factory, agent):
    from app.services import links

    cert_request = factory.request(product_code="enotariado", agent=agent)
    conference = Conference(request=cert_request, kind="instant", state="open", opens_at=utcnow(),
                            code_nonce=secrets.token_hex(16), agent=agent)
    db.session.add(conference)
    links.create_link(cert_request, "conference")
    db.session.commit()
    return conference


def _session_cookie(live_server, email):
    """Log in over HTTP like a browser and return the session cookie."""
    import http.cookiejar
    import re
    import urllib.parse
    import urllib.request

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(live_server.url + "/equipe/entrar").read().decode()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    body = urllib.parse.urlencode({"csrf_token": token, "email": email,
                                   "password": STAFF_PASSWORD}).encode()
    opener.open(live_server.url + "/equipe/entrar", body)
    return "; ".join(f"{c.name}={c.value}" for c in jar)


def _closed_without_answer(url, headers):
    """The upgrade is refused (a redirect to the login) or the socket is closed at once."""
    try:
        ws = simple_websocket.Client.connect(url, headers=headers)
    except simple_websocket.ConnectionError:
        return
    try:
        ws.send(json.dumps({"type": "offer", "sdp": "v=0"}))
        for _ in range(20):
            if ws.receive(timeout=0.5) is not None:
                pytest.fail(f"the socket answered: {url} {headers}")
        pytest.fail(f"the socket stayed open: {url} {headers}")
    except simple_websocket.ConnectionClosed as closed:
        assert closed.reason == 1008, (url, headers, closed.reason)
    finally:
        try:
            ws.close()
        except simple_websocket.ConnectionClosed:
            pass


def test_sockets_check_origin_session_and_role(live_server, db, factory, agent, room):
    ws_base = live_server.url.replace("http://", "ws://")
    agent_url = f"{ws_base}/conferencias/{room.id}/sinal"
    client_url = f"{ws_base}/conferencia/sinal"
    good_origin = {"Origin": live_server.url}
    verifier = factory.staff(roles=("verifier",))
    db.session.rollback()  # end the test's read snapshot: the web process writes from here on

    # No session at all.
    _closed_without_answer(agent_url, good_origin)
    _closed_without_answer(client_url, good_origin)
    # A logged-in agent, but the page is someone else's (cross-site WebSocket hijacking).
    cookie = _session_cookie(live_server, agent.email)
    _closed_without_answer(agent_url, {"Origin": "https://evil.example", "Cookie": cookie})
    _closed_without_answer(agent_url, {"Cookie": cookie})  # no Origin header
    # A verifier may look at the console but not join the call.
    _closed_without_answer(agent_url, {"Origin": live_server.url,
                                       "Cookie": _session_cookie(live_server, verifier.email)})
    # The staff session does not open the client's socket either.
    _closed_without_answer(client_url, {"Origin": live_server.url, "Cookie": cookie})
    db.session.expire_all()
    assert db.session.execute(select(ConferenceConnection)).first() is None

    # The agent from our own page is answered (an error: no media process runs here).
    ws = simple_websocket.Client.connect(agent_url, headers={"Origin": live_server.url,
                                                              "Cookie": cookie})
    try:
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.receive(timeout=10)) == {"type": "pong"}
        for junk in ("not json", "[1, 2]", json.dumps({"type": "offer"})):
            ws.send(junk)
            assert json.loads(ws.receive(timeout=10))["type"] == "error"
    finally:
        ws.close()
