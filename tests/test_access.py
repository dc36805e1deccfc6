"""Every staff route needs a login; every admin route needs the admin role.

The routes are read from the app's URL map, so a new route cannot be forgotten: a route is
public only if it is listed in PUBLIC_ENDPOINTS.
"""
import re

import pytest

from app import create_app
from app.config import TestConfig

PUBLIC_ENDPOINTS = {
    "static", "public.home", "client_documents.entry", "health.healthz", "auth.login",
    "auth.set_language", "public.request_certificate", "public.altcha_challenge",
    "conference_entry.entry", "public.privacy",
    # The holder's issuance link and revocation (password-protected, rate-limited), and what the
    # certificates point at: CA certificates, CRLs, the policy page, the timestamp authority.
    "issuance.start", "issuance.unlock", "issuance.revoke", "ca_public.root_certificate",
    "ca_public.issuing_certificate", "ca_public.issuing_crl", "ca_public.root_crl",
    "ca_public.policy", "ca_public.timestamp",
}


def _rules():
    app = create_app(TestConfig)
    rules = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS or rule.websocket:
            continue
        url = re.sub(r"<(?:int:)?[^>]+>", "1", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            rules.append(pytest.param(rule.endpoint, method, url, id=f"{method} {rule.rule}"))
    return rules


RULES = _rules()
ADMIN_RULES = [p for p in RULES if p.values[0].startswith("admin.")]


@pytest.mark.parametrize("endpoint,method,url", RULES)
def test_staff_route_requires_login(client, endpoint, method, url):
    response = client.open(url, method=method)
    assert response.status_code in (302, 401), f"{endpoint} answered {response.status_code}"
    if response.status_code == 302:
        assert "/equipe/entrar" in response.location


@pytest.mark.parametrize("endpoint,method,url", ADMIN_RULES)
def test_admin_route_refuses_an_agent(client, auth, agent, endpoint, method, url):
    auth.login(agent.email)
    response = client.open(url, method=method)
    assert response.status_code == 403, f"{endpoint} answered {response.status_code}"
    assert "Você não tem permissão para abrir esta página." in response.text


def test_verifier_cannot_register_people(client, auth, factory):
    verifier = factory.staff(roles=("verifier",))
    auth.login(verifier.email)
    assert client.get("/pessoas/").status_code == 403
    assert client.get("/painel/").status_code == 200


def test_websocket_routes_take_only_websockets(client):
    """A plain request to a WebSocket route is refused by the router; who may open the socket
    is checked by the handler itself (tests/test_signaling.py)."""
    app = create_app(TestConfig)
    sockets = [r for r in app.url_map.iter_rules() if r.websocket]
    assert {r.endpoint for r in sockets} == {"conference_call.signal", "console.signal"}
    for rule in sockets:
        url = re.sub(r"<(?:int:)?[^>]+>", "1", rule.rule)
        assert client.get(url).status_code == 400


def test_every_public_endpoint_exists():
    app = create_app(TestConfig)
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert PUBLIC_ENDPOINTS <= endpoints, f"missing: {PUBLIC_ENDPOINTS - endpoints}"
