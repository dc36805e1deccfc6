"""How `web` talks to the media process: a command on a Redis list, the answer on another."""
import json
import uuid

from . import REQUESTS_KEY


def call(connection, op: str, timeout: float = 5.0, **payload) -> dict | None:
    """Send a command and wait for the media process's answer (None if it did not answer)."""
    reply_to = f"videoar:media:reply:{uuid.uuid4().hex}"
    connection.rpush(REQUESTS_KEY, json.dumps({"op": op, "reply_to": reply_to, **payload}))
    item = connection.blpop([reply_to], timeout=timeout)
    if item is None:
        return None
    return json.loads(item[1])
