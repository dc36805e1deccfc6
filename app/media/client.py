"""How `web` talks to the media process: a command on a Redis list, the answer on another.

    call(r, "join", timeout=15, room="42", conn=conn_id, role="client", sdp=offer_sdp,
         type="offer", record=True, record_dir="/srv/videoar/recordings/42")
    call(r, "ping")  # {"op": "pong", "ident", "started_at", "calls", "capacity", ...}
    call(r, "status", node=ident, room="42")   # to one media process (the room's)

With several media processes, each takes commands from its own list as well as the shared one;
web sends every command about a room to the process that holds it (`Conference.media_node`),
and places a new room on the live process with the most free capacity (`nodes()`).
"""
import json
import time
import uuid

from . import NODE_PREFIX, REQUESTS_KEY, node_requests_key


def nodes(connection) -> list[dict]:
    """The live media processes' heartbeats (ident, calls, capacity, …)."""
    keys = list(connection.scan_iter(match=NODE_PREFIX + "*", count=100))
    if not keys:
        return []
    return [json.loads(raw) for raw in connection.mget(keys) if raw]


def call(connection, op: str, timeout: float = 5.0, node: str | None = None,
         **payload) -> dict | None:
    """Send a command and wait for the media process's answer (None if it did not answer).

    The command carries a deadline: a media process that picks it up later (it was down or
    busy) drops it instead of acting on a request nobody waits for."""
    reply_to = f"videoar:media:reply:{uuid.uuid4().hex}"
    command = {"op": op, "reply_to": reply_to, "deadline": time.time() + timeout, **payload}
    key = node_requests_key(node) if node else REQUESTS_KEY
    with connection.pipeline() as pipe:
        pipe.rpush(key, json.dumps(command))
        if node:  # a process that died leaves its list: let Redis forget it
            pipe.expire(key, 120)
        pipe.execute()
    item = connection.blpop([reply_to], timeout=timeout)
    if item is None:
        return None
    return json.loads(item[1])
