"""The media process: an asyncio program that will host the aiortc peer of each call.

It talks to `web` only through Redis: a heartbeat key, and a request list (`REQUESTS_KEY`)
on which web pushes JSON commands with a reply key; media answers on that key.
"""
HEARTBEAT_KEY = "videoar:media:heartbeat"
REQUESTS_KEY = "videoar:media:requests"
