"""The media process: an asyncio program hosting the aiortc peer of each call.

It talks to `web` only through Redis: a heartbeat key, a request list (`REQUESTS_KEY`) on
which web pushes JSON commands with a reply key (media answers on that key), and one pub/sub
channel per room for events (`room_channel`). See docs/media-protocol.md.
"""
HEARTBEAT_KEY = "videoar:media:heartbeat"     # the latest heartbeat of any media process
REQUESTS_KEY = "videoar:media:requests"       # commands any media process may take (ping)
NODE_PREFIX = "videoar:media:node:"           # + ident: each process's own heartbeat


def node_requests_key(ident: str) -> str:
    """Commands for one media process (every command about a room goes to the room's)."""
    return f"videoar:media:requests:{ident}"


def room_channel(room) -> str:
    return f"videoar:room:{room}"
