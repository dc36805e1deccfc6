"""Run the media process: `python -m app.media`.

Settings come from the environment (defaults from app.config.Config): REDIS_URL,
MEDIA_HEALTH_HOST/PORT, MEDIA_CAPACITY, RECORDINGS_ROOT, RECORDING_MIN_FREE_MB, ICE_SERVERS,
MEDIA_ANNOUNCED_ADDRESS, MEDIA_PORT_MIN/MAX. Test and bench only: MEDIA_TRANSCODE=1 (stock
decode + re-encode relay, no recording), MEDIA_SEGMENT_SOFT/HARD (seconds; default 8/10).
"""
import asyncio
import gc
import logging
import os
import signal

from .rooms import MediaSettings, parse_ice_servers
from .server import MediaServer


def settings_from_env(config) -> MediaSettings:
    env = os.environ.get
    root = env("RECORDINGS_ROOT", config.RECORDINGS_ROOT) or str(
        os.path.join(str(getattr(config, "INSTANCE_DIR", "instance")), "recordings"))
    return MediaSettings(
        capacity=int(env("MEDIA_CAPACITY", config.MEDIA_CAPACITY)),
        recordings_root=root,
        min_free_mb=float(env("RECORDING_MIN_FREE_MB", config.RECORDING_MIN_FREE_MB)),
        ice_servers=parse_ice_servers(env("ICE_SERVERS", config.ICE_SERVERS)),
        turn={k: env(k, getattr(config, k, "")) for k in ("TURN_URLS", "TURN_SECRET", "TURN_TTL_SECONDS")},
        announced_address=env("MEDIA_ANNOUNCED_ADDRESS", config.MEDIA_ANNOUNCED_ADDRESS).strip(),
        port_min=int(env("MEDIA_PORT_MIN", config.MEDIA_PORT_MIN) or 0),
        port_max=int(env("MEDIA_PORT_MAX", config.MEDIA_PORT_MAX) or 0),
        transcode=env("MEDIA_TRANSCODE", "") in ("1", "true", "yes"),
        segment_soft=float(env("MEDIA_SEGMENT_SOFT", "8")),
        segment_hard=float(env("MEDIA_SEGMENT_HARD", "10")),
    )


def main():
    from app.logging_setup import configure_logging

    configure_logging()  # LOG_FORMAT: text, or one JSON object a line
    logging.getLogger("aioice").setLevel(logging.WARNING)
    from app.config import Config

    settings = settings_from_env(Config)
    # Fewer, cheaper garbage collections: what was imported at start is never collected
    # (freeze), and aiortc's per-packet objects rarely form cycles. This roughly halved the
    # time spent in GC at 10 calls (bench/media.py).
    gc.collect()
    gc.freeze()
    gc.set_threshold(20000, 20, 20)
    if settings.announced_address:
        from .net import announce
        announce("", settings.announced_address)  # raises if it is not an IP address
    server = MediaServer(
        redis_url=os.environ.get("REDIS_URL", Config.REDIS_URL),
        health_host=os.environ.get("MEDIA_HEALTH_HOST", "127.0.0.1"),
        health_port=int(os.environ.get("MEDIA_HEALTH_PORT", "5001")),
        settings=settings,
    )

    async def run():
        loop = asyncio.get_running_loop()
        if settings.port_min or settings.port_max:
            from .net import restrict_udp_ports
            restrict_udp_ports(loop, settings.port_min, settings.port_max)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, server.stop)
        await server.run()

    asyncio.run(run())


if __name__ == "__main__":
    main()
