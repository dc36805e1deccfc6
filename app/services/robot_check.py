"""The "Não sou um robô" check: a self-hosted proof of work (ALTCHA), no third party.

The browser fetches a challenge signed with a key derived from SECRET_KEY, searches for the
counter whose PBKDF2 key starts with the challenge's prefix (up to ALTCHA_MAX_NUMBER tries),
and sends the answer with the form as the `altcha` field. `verify` checks the signature, the
expiry and the answer, then marks the challenge used in Redis, so one solved challenge
passes one form submission only.

    robot_check.verify(form.altcha.data)   # raises RobotCheckError with a pt-BR message

Templates render the widget with the macros of `_robot_check.html`.
"""
import base64
import hashlib
import hmac
import json
import secrets
import time

import altcha
from flask import current_app
from flask_babel import lazy_gettext as _l

from ..jobs import redis_connection
from . import ServiceError

# PBKDF2 runs in the browser's WebCrypto (the widget's bundled worker) and in Python's hashlib.
ALGORITHM = "PBKDF2/SHA-256"
# PBKDF2 iterations per try; the number of tries (ALTCHA_MAX_NUMBER) is the difficulty knob.
KDF_ITERATIONS = 10
# A payload is a few hundred bytes; anything far larger is not ours.
MAX_PAYLOAD_LENGTH = 4096
USED_KEY_PREFIX = "videoar:altcha:used:"

MISSING = _l("Marque “Não sou um robô” antes de enviar.")
INVALID = _l("A verificação “Não sou um robô” não foi aceita. Marque a caixa novamente.")
EXPIRED = _l("A verificação “Não sou um robô” expirou. Marque a caixa novamente.")
ALREADY_USED = _l("Esta verificação “Não sou um robô” já foi usada. Se você já enviou o "
                  "formulário, confira seu e-mail; se não, marque a caixa novamente.")


class RobotCheckError(ServiceError):
    pass


def _hmac_secret() -> str:
    # Its own key, so a challenge signature can never double as any other token of the app.
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, b"videoar:altcha-challenge", hashlib.sha256).hexdigest()


def create_challenge() -> dict:
    """A new signed challenge, as the JSON the widget fetches.

    The counter is fixed in advance (ALTCHA's deterministic mode) and drawn from the upper
    half of 0..ALTCHA_MAX_NUMBER, so every solution costs at least half the maximum work.
    """
    max_number = max(2, int(current_app.config["ALTCHA_MAX_NUMBER"]))
    low = max_number // 2
    counter = low + secrets.randbelow(max_number - low + 1)
    expires_at = int(time.time()) + int(current_app.config["ALTCHA_EXPIRES_SECONDS"])
    challenge = altcha.create_challenge(
        ALGORITHM, KDF_ITERATIONS, counter=counter, expires_at=expires_at,
        hmac_secret=_hmac_secret())
    return challenge.to_dict()


def verify(payload: str | None) -> None:
    """Accept a solved challenge once. Raises RobotCheckError (message in pt-BR) when the
    payload is missing, malformed, forged, wrongly solved, expired or already used."""
    if not payload or not payload.strip():
        raise RobotCheckError(MISSING)
    payload = payload.strip()
    if len(payload) > MAX_PAYLOAD_LENGTH:
        raise RobotCheckError(INVALID)
    result = altcha.verify_solution(payload, _hmac_secret())
    if result.expired:
        raise RobotCheckError(EXPIRED)
    if not result.verified:
        raise RobotCheckError(INVALID)
    # Verified: the payload parses, and its challenge carries our signature and our expiry.
    challenge = json.loads(base64.b64decode(payload).decode())["challenge"]
    expires_at = challenge["parameters"].get("expiresAt")
    if not isinstance(expires_at, int):
        raise RobotCheckError(INVALID)
    # Remember the challenge a little past its expiry; after that it fails as expired anyway.
    ttl = max(1, expires_at - int(time.time()) + 60)
    first_use = redis_connection().set(USED_KEY_PREFIX + challenge["signature"], "1",
                                       nx=True, ex=ttl)
    if not first_use:
        raise RobotCheckError(ALREADY_USED)

