"""The media server's control loop: heartbeat, commands from web, HTTP health check."""
import asyncio
import json
import logging
import os
import socket
import time

import redis.asyncio as aioredis

from . import HEARTBEAT_KEY, REQUESTS_KEY

log = logging.getLogger("videoar.media")
HEARTBEAT_SECONDS = 5


class MediaServer:
    def __init__(self, redis_url: str, health_host: str = "127.0.0.1", health_port: int = 5001):
        self.redis_url = redis_url
        self.health_host = health_host
        self.health_port = health_port
        self.started_at = time.time()
        self.ident = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = asyncio.Event()
        self.redis = None

    def stop(self):
        self._stop.set()

    def status(self) -> dict:
        return {"status": "ok", "media": self.ident, "uptime": round(time.time() - self.started_at, 1),
                "calls": 0}

    async def run(self):
        self.redis = aioredis.from_url(self.redis_url, socket_connect_timeout=5)
        health = await asyncio.start_server(self._health, self.health_host, self.health_port)
        log.info("media process %s up; health on http://%s:%s/healthz", self.ident,
                 self.health_host, self.health_port)
        tasks = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._commands())]
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        health.close()
        await health.wait_closed()
        try:
            await self.redis.delete(HEARTBEAT_KEY)
        except Exception:
            pass
        await self.redis.aclose()
        log.info("media process stopped")

    async def _heartbeat(self):
        while True:
            try:
                await self.redis.set(HEARTBEAT_KEY, json.dumps(self.status()),
                                     ex=HEARTBEAT_SECONDS * 3)
            except Exception as exc:  # Redis restarting: keep trying
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _commands(self):
        while True:
            try:
                item = await self.redis.blpop([REQUESTS_KEY], timeout=5)
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
                reply = await self.handle(command)
                await self.redis.rpush(command["reply_to"], json.dumps(reply))
                await self.redis.expire(command["reply_to"], 30)
            except Exception as exc:
                log.exception("bad command: %s", exc)

    async def handle(self, command: dict) -> dict:
        if command.get("op") == "ping":
            return {"op": "pong", **self.status()}
        return {"error": "unknown command"}

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
