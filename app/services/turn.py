"""ICE servers for a peer: the static ICE_SERVERS plus time-limited TURN credentials.

The credentials follow the "TURN REST API" scheme that coturn implements with
`use-auth-secret` + `static-auth-secret` (docs/deploy.md):

    username   = "<unix expiry>:<who>"
    credential = base64(HMAC-SHA1(TURN_SECRET, username))

so coturn checks them with the shared secret alone, and they stop working after
TURN_TTL_SECONDS. Settings: TURN_URLS (comma-separated, e.g.
"turn:turn.example:3478?transport=udp,turns:turn.example:443?transport=tcp"), TURN_SECRET,
TURN_TTL_SECONDS (3600), ICE_TRANSPORT_POLICY ("all"; "relay" forces the browsers through
TURN). Each is read from the app's config when it has it, else from the environment.
"""
import base64
import hashlib
import hmac
import json
import os
import time

DEFAULT_TTL = 3600
POLICIES = ("all", "relay")


def _setting(config, name, default=""):
    if config is None:
        from flask import current_app

        config = current_app.config
    value = config.get(name) if hasattr(config, "get") else getattr(config, name, None)
    if value is None:
        value = os.environ.get(name, default)
    return value


def credential_for(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def credentials(secret: str, for_whom: str, ttl: int = DEFAULT_TTL, now: float | None = None):
    """(username, credential) valid until now + ttl."""
    expiry = int(now if now is not None else time.time()) + int(ttl)
    username = f"{expiry}:{for_whom}"
    return username, credential_for(secret, username)


def turn_urls(config=None) -> list[str]:
    text = _setting(config, "TURN_URLS") or ""
    return [url.strip() for url in str(text).split(",") if url.strip()]


def turn_servers(for_whom: str, config=None, now: float | None = None) -> list[dict]:
    """The TURN entry with fresh credentials, or [] when TURN_URLS or TURN_SECRET is unset."""
    secret = _setting(config, "TURN_SECRET") or ""
    urls = turn_urls(config)
    if not secret or not urls:
        return []
    ttl = int(_setting(config, "TURN_TTL_SECONDS", "") or DEFAULT_TTL)
    username, credential = credentials(secret, for_whom, ttl, now)
    return [{"urls": urls, "username": username, "credential": credential}]


def static_servers(config=None) -> list:
    value = json.loads(_setting(config, "ICE_SERVERS", "[]") or "[]")
    if not isinstance(value, list):
        raise ValueError("ICE_SERVERS must be a JSON list of RTCIceServer objects")
    return value


def ice_servers(for_whom: str, config=None, now: float | None = None) -> list[dict]:
    """RTCIceServer dicts for one peer: ICE_SERVERS plus TURN with credentials for `for_whom`
    (a label without personal data, e.g. "agent-12", "client-12", "media")."""
    return static_servers(config) + turn_servers(for_whom, config, now)


def transport_policy(config=None) -> str:
    """RTCPeerConnection's iceTransportPolicy for the browsers: "all" or "relay"."""
    value = str(_setting(config, "ICE_TRANSPORT_POLICY", "all") or "all").strip().lower()
    if value not in POLICIES:
        raise ValueError(f"ICE_TRANSPORT_POLICY must be one of {POLICIES}, not {value!r}")
    return value
