"""The media server's control loop: heartbeat, commands from web, HTTP health check, rooms.

Commands (docs/media-protocol.md) arrive as JSON on this process's own Redis list
(`node_requests_key(ident)`, where web sends everything about the rooms it placed here) or on
the shared `REQUESTS_KEY`; each runs in
its own task (commands of one room are serialized by the room's lock) and is answered on its
`reply_to` key. Events go to the pub/sub channel `videoar:room:<room>`.
"""
import asyncio
import json
import logging
import os
import socket
import time
from collections import deque

import redis.asyncio as aioredis

from . import HEARTBEAT_KEY, NODE_PREFIX, REQUESTS_KEY, node_requests_key, room_channel
from .rooms import CommandError, MediaSettings, Rooms

log = logging.getLogger("videoar.media")
HEARTBEAT_SECONDS = 5
LAG_INTERVAL = 0.05       # the loop-lag probe sleeps this long and measures the overshoot
LAG_KEEP_SECONDS = 300
CLOCK_SKEW = 1.0          # web's deadline is its own clock: tolerate this much difference


class LoopLag:
    """Event-loop lag: how late a periodic `asyncio.sleep` wakes up (sleep drift)."""

    def __init__(self):
        self.samples: deque = deque()   # (monotonic time, lag seconds)

    async def run(self):
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(LAG_INTERVAL)
            now = loop.time()
            self.samples.append((now, max(0.0, now - start - LAG_INTERVAL)))
            while self.samples and self.samples[0][0] < now - LAG_KEEP_SECONDS:
                self.samples.popleft()

    def stats(self, window: float = 60.0) -> dict:
        cutoff = asyncio.get_running_loop().time() - window
        lags = sorted(lag for t, lag in self.samples if t >= cutoff)
        if not lags:
            return {"samples": 0}

        def pct(p):
            return round(lags[min(len(lags) - 1, int(p * len(lags)))] * 1000, 2)

        return {"window_s": window, "samples": len(lags), "p50_ms": pct(0.50),
                "p99_ms": pct(0.99), "max_ms": round(lags[-1] * 1000, 2)}


class MediaServer:
    def __init__(self, redis_url: str, health_host: str = "127.0.0.1", health_port: int = 5001,
                 settings: MediaSettings | None = None):
        self.redis_url = redis_url
        self.health_host = health_host
        self.health_port = health_port
        self.settings = settings or MediaSettings()
        self.started_at = time.time()
        self.ident = f"{socket.gethostname()}:{os.getpid()}:{int(self.started_at)}"
        self._stop = asyncio.Event()
        self.redis = None
        self.rooms = Rooms(self.settings, self._publish)
        self.lag = LoopLag()
        self._tasks: set = set()

    def stop(self):
        self._stop.set()

    def status(self, lag_window: float = 60.0) -> dict:
        return {"status": "ok", "media": self.ident, "ident": self.ident,
                "started_at": self.started_at,
                "uptime": round(time.time() - self.started_at, 1),
                "calls": self.rooms.calls(), "capacity": self.settings.capacity,
                "participants": sum(len(r.participants) for r in self.rooms.rooms.values()),
                "recording": sum(1 for r in self.rooms.rooms.values() if r.recording),
                "transcode": self.settings.transcode,
                "loop_lag": self.lag.stats(lag_window)}

    async def run(self):
        self.redis = aioredis.from_url(self.redis_url, socket_connect_timeout=5)
        health = await asyncio.start_server(self._health, self.health_host, self.health_port)
        log.info("media process %s up; health on http://%s:%s/healthz; capacity %d calls%s",
                 self.ident, self.health_host, self.health_port, self.settings.capacity,
                 " (TRANSCODE mode)" if self.settings.transcode else "")
        tasks = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._commands()),
                 asyncio.create_task(self.lag.run()), asyncio.create_task(self._sweeper())]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # A graceful stop closes every call properly (segments kept).
        await self.rooms.close_all()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)
        health.close()
        await health.wait_closed()
        try:
            await self.redis.delete(NODE_PREFIX + self.ident)
        except Exception:
            pass
        await self.redis.aclose()
        log.info("media process stopped")

    async def _publish(self, room_id: str, event: dict):
        await self.redis.publish(room_channel(room_id), json.dumps(event))

    async def _heartbeat(self):
        while True:
            try:
                beat = json.dumps(self.status())
                await self.redis.set(NODE_PREFIX + self.ident, beat, ex=HEARTBEAT_SECONDS * 3)
                await self.redis.set(HEARTBEAT_KEY, beat, ex=HEARTBEAT_SECONDS * 3)
            except Exception as exc:  # Redis restarting: keep trying
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _sweeper(self):
        while True:
            await asyncio.sleep(10)
            self.rooms.sweep()

    async def _commands(self):
        while True:
            try:
                # Own list first; the shared one carries only commands for any process.
                item = await self.redis.blpop([node_requests_key(self.ident), REQUESTS_KEY],
                                              timeout=2)  # < socket timeout (5 s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("command loop: %s", exc)
                await asyncio.sleep(1)
                continue
            if item is None:
                continue
            try:
                command = json.loads(item[1])
            except ValueError:
                log.warning("not JSON: %r", item[1][:200])
                continue
            task = asyncio.create_task(self._run_command(command))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_command(self, command: dict):
        reply_to = command.get("reply_to")
        deadline = command.get("deadline")
        if deadline is not None and time.time() > deadline + CLOCK_SKEW:
            log.warning("dropped a stale %s command (web gave up waiting)", command.get("op"))
            return
        try:
            reply = await self.handle(command)
        except CommandError as exc:
            reply = exc.reply
        except Exception as exc:
            log.exception("command %s failed", command.get("op"))
            reply = {"ok": False, "error": "internal", "message": str(exc)[:300]}
        if not reply_to:
            return
        try:
            await self.redis.rpush(reply_to, json.dumps(reply))
            await self.redis.expire(reply_to, 30)
        except Exception as exc:
            log.warning("could not answer %s: %s", command.get("op"), exc)
        if (command.get("op") == "join" and reply.get("ok") and deadline is not None
                and time.time() > deadline + CLOCK_SKEW):
            # web stopped waiting: nobody will apply this answer
            log.warning("join of %s answered too late, dropping it", command.get("conn"))
            await self.rooms.leave(str(command.get("room")), command.get("conn"))

    async def handle(self, command: dict) -> dict:
        op = command.get("op")
        if op == "ping":
            return {"op": "pong", **self.status(float(command.get("lag_window", 60)))}
        if op not in ("join", "leave", "record", "end", "status"):
            return {"ok": False, "error": "unknown_command", "message": f"unknown op {op!r}"}
        room = command.get("room")
        if room in (None, ""):
            return {"ok": False, "error": "bad_request", "message": "room missing"}
        args = {k: v for k, v in command.items() if k not in ("op", "reply_to", "room", "deadline")}
        room = str(room)
        if op == "join":
            return await self.rooms.join(room, **args)
        if op == "leave":
            return await self.rooms.leave(room, **args)
        if op == "record":
            return await self.rooms.record(room, **args)
        if op == "end":
            return await self.rooms.end(room, **args)
        return self.rooms.status(room, **args)

    async def _health(self, reader, writer):
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            ok = request_line.split(b" ")[1:2] == [b"/healthz"]
            body = json.dumps(self.status() if ok else {"error": "not found"}).encode()
            status = b"200 OK" if ok else b"404 Not Found"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except Exception:
            pass
        finally:
            writer.close()
