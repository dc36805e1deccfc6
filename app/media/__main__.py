"""Run the media process: `python -m app.media`."""
import asyncio
import logging
import os
import signal

from .server import MediaServer


def main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s media %(message)s")
    from app.config import Config

    server = MediaServer(
        redis_url=os.environ.get("REDIS_URL", Config.REDIS_URL),
        health_host=os.environ.get("MEDIA_HEALTH_HOST", "127.0.0.1"),
        health_port=int(os.environ.get("MEDIA_HEALTH_PORT", "5001")),
    )

    async def run():
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        await server.run()

    asyncio.run(run())


if __name__ == "__main__":
    main()
