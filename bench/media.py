"""Media benchmark: the media processes' cost per recorded call, forwarding encoded frames.

    .venv/bin/python bench/media.py                    # 640x480 and 1280x720, N = 1, 2, 5, 10, 2 media processes
    .venv/bin/python bench/media.py --media-processes 1             # one process: per-call cost + transcode
    .venv/bin/python bench/media.py --media-processes 1,2 --calls 10 --transcode-calls ""
    .venv/bin/python bench/media.py --quick            # 640x480, N = 2, 10 (transcode N = 1 if K = 1)

For each size, N and K (`--media-processes`, default 2 as the launcher's MEDIA_PROCESSES) it
starts K fresh media processes (`python -m app.media`, each with its own MEDIA_HEALTH_PORT, the
same REDIS_URL = Redis db 9 unless --redis-url, recordings in one temporary directory) and, in a
*separate* process, N calls: two aiortc peers per call, each sending a pre-encoded VP8/Opus WebM
(made here with PyAV: 30 fps, about 1 Mbps at 640x480 and 2.5 Mbps at 1280x720, Opus 48 kHz
stereo), joined through the Redis commands exactly as web does, every call recorded. The rooms
are placed as web places them (app/services/conference.py `place()`): each new room on the live
process with the least load relative to its capacity (heartbeat calls + rooms placed since),
i.e. round-robin from an even start; every command about a room goes to its process's own list
(`client.call(..., node=ident)`). The client peers do not decode what they receive (they count
frames through the hook), so the load generator stays light. After a warm-up, over a window of
`--window` s:
- CPU of each media process (utime + stime from /proc/<pid>/stat), in cores, and the total per
  call;
- each process's resident memory (VmRSS) at the end;
- each process's event-loop lag p50/p99/max (the server's sleep-drift probe, `ping` with
  lag_window);
- relayed fps (frames the peers received, per second) and recorded fps (from the segments
  closed when the calls end: packets and pts, per segment);
then, with K = 1 only, the same calls with the stock aiortc path (MEDIA_TRANSCODE=1: the receiver
decodes, the sender re-encodes; no recording) for the ratio.

Targets (issue 4): <= 0.12 core per recorded call at 640x480@30, recordings >= 29 fps, loop
lag p99 <= 5 ms at 10 calls (per media process), >= 4x cheaper than transcoding at equal N.
"""
import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {"vga": (640, 480, 1_000_000), "hd": (1280, 720, 2_500_000)}
TARGET_CORE_PER_CALL = 0.12
TARGET_FPS = 29.0
TARGET_LAG_P99_MS = 5.0
TARGET_RATIO = 4.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- measurements of a process -----------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def make_clip(path: Path, size: str, seconds: float, gop: int) -> Path:
    from tests.support.media import encode_opus, encode_vp8, write_webm

    width, height, bitrate = SIZES[size]
    fps = 30
    chunk = encode_vp8(width, height, gop, fps, gop, bitrate)
    video = [(chunk[i % gop][0], round(i * 1000 / fps), chunk[i % gop][2])
             for i in range(int(seconds * fps))]
    audio = []
    tone = encode_opus(10)
    for i in range(int(seconds * 50)):
        audio.append((tone[i % len(tone)][0], i * 20))
    return write_webm(path, video, audio, width, height)


def browser_like_tracks(clip: str):
    """Tracks that send like a browser: 30 fps / 20 ms paced by the wall clock, pts always
    increasing, and a VP8 keyframe only at the start and when the sender gets a PLI/FIR
    (`request_keyframe`); otherwise the clip's delta frames are sent in a loop (the media
    process never decodes, so their references do not matter)."""
    import av
    from aiortc.mediastreams import MediaStreamTrack

    with av.open(clip) as container:
        packets = [(p.stream.type, bytes(p), p.is_keyframe) for p in container.demux() if p.size]
    keyframe = next(d for t, d, k in packets if t == "video" and k)
    deltas = [d for t, d, k in packets if t == "video" and not k]
    opus = [d for t, d, k in packets if t == "audio"]

    class Paced(MediaStreamTrack):
        def __init__(self, kind):
            super().__init__()
            self.kind = kind
            self.period = 1 / 30 if kind == "video" else 0.02
            self.step = 3000 if kind == "video" else 960
            self.time_base = aiortc_time_base(kind)
            self.n = 0
            self.start = None
            self.want_keyframe = True
            self.keyframes = 0

        def request_keyframe(self):
            self.want_keyframe = True

        async def recv(self):
            if self.start is None:
                self.start = time.monotonic()
            due = self.start + self.n * self.period
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.kind == "video":
                if self.want_keyframe:
                    self.want_keyframe = False
                    self.keyframes += 1
                    data, key = keyframe, True
                else:
                    data, key = deltas[self.n % len(deltas)], False
            else:
                data, key = opus[self.n % len(opus)], True
            packet = av.Packet(data)
            packet.pts = packet.dts = self.n * self.step
            packet.time_base = self.time_base
            packet.is_keyframe = key
            self.n += 1
            return packet

    return Paced("audio"), Paced("video")


def aiortc_time_base(kind):
    from fractions import Fraction

    return Fraction(1, 90000) if kind == "video" else Fraction(1, 48000)


# -- the client process (N calls) -------------------------------------------------------------
async def run_clients(args):
    import redis
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.contrib.media import MediaPlayer
    from aiortc.mediastreams import MediaStreamError

    from app.media import aiortc_hook, client as media_client

    connection = redis.Redis.from_url(args.redis_url)
    loop = asyncio.get_running_loop()
    placement = json.loads(args.placement)   # room index -> media process ident
    if args.client_rcvbuf:
        # One (niced) process receives for all the peers. With aioice's 256 KB receive buffer
        # per socket its queues filled up and the kernel dropped datagrams (/proc/net/udp
        # `drops`) when 2 media processes sent in parallel at 1280x720: relayed fps fell to
        # 5-15 while the recordings kept 30 and the media processes dropped nothing. That is
        # the load generator, not the media process (browsers each have their own machine).
        import aioice.turn

        aioice.turn.UDP_SOCKET_BUFFER_SIZE = args.client_rcvbuf   # aioice sets SO_RCVBUF to it
    peers = []

    class Peer:
        def __init__(self, room, role, node):
            self.room, self.role, self.conn, self.node = room, role, uuid.uuid4().hex, node
            self.pc = RTCPeerConnection()
            if args.source == "player":
                self.player = MediaPlayer(args.clip, decode=False)
                audio, video = self.player.audio, self.player.video
            else:
                audio, video = browser_like_tracks(args.clip)
            self.pc.addTransceiver(audio, direction="sendrecv")
            sender = self.pc.addTransceiver(video, direction="sendrecv").sender
            if args.source != "player":
                sender._send_keyframe = video.request_keyframe   # a browser answers PLIs
            self.video = video
            self.frames = {"audio": 0, "video": 0}
            self.pc.on("track", self.on_track)

        def on_track(self, track):
            receiver = next(t.receiver for t in self.pc.getTransceivers()
                            if t.receiver.track is track)
            aiortc_hook.register(track, receiver)   # count encoded frames, do not decode

            async def consume():
                while True:
                    try:
                        await track.recv()
                    except MediaStreamError:
                        return
                    self.frames[track.kind] += 1

            asyncio.ensure_future(consume())

        async def join(self):
            await self.pc.setLocalDescription(await self.pc.createOffer())
            reply = await asyncio.to_thread(
                media_client.call, connection, "join", 30, node=self.node, room=self.room,
                conn=self.conn,
                role=self.role, sdp=self.pc.localDescription.sdp, type="offer",
                record=args.record, record_dir=str(Path(args.recordings) / self.room))
            if not reply or not reply.get("ok"):
                raise SystemExit(f"join refused: {reply}")
            await self.pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))

    for i in range(args._clients):
        room = f"bench-{i}"
        for role in ("client", "agent"):
            peers.append(Peer(room, role, placement[i]))
    for peer in peers:
        await peer.join()
    deadline = time.monotonic() + 30
    while any(p.pc.connectionState != "connected" for p in peers):
        if time.monotonic() > deadline:
            raise SystemExit("peers did not connect")
        await asyncio.sleep(0.1)
    print("READY", flush=True)
    lags, measuring = [], False

    async def probe():   # the load generator's own loop lag (as the server's probe)
        while True:
            start = loop.time()
            await asyncio.sleep(0.05)
            if measuring:
                lags.append(max(0.0, loop.time() - start - 0.05))

    lag_task = asyncio.ensure_future(probe())
    marks = []
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        marks.append((time.monotonic(), [dict(p.frames) for p in peers],
                      [getattr(p.video, "n", None) for p in peers]))
        measuring = True
        if line != "MARK":
            break
    (t0, first, sent0), (t1, last, sent1) = marks[0], marks[-1]
    fps = [(b["video"] - a["video"]) / (t1 - t0) for a, b in zip(first, last)]
    # What the (niced) peers managed to send, by the wall clock: < 30 means the load
    # generator was starved of CPU and every other number of the run is suspect.
    sent = [(b - a) / (t1 - t0) for a, b in zip(sent0, sent1) if a is not None]
    lag_task.cancel()
    lags.sort()
    client_lag = {"p99_ms": round(lags[int(0.99 * len(lags))] * 1000, 1),
                  "max_ms": round(lags[-1] * 1000, 1)} if lags else {}
    audio = [(b["audio"] - a["audio"]) / (t1 - t0) for a, b in zip(first, last)]
    keyframes = [getattr(p.video, "keyframes", 0) for p in peers]
    print(json.dumps({"relayed_fps": fps, "relayed_audio_pps": audio, "sent_fps": sent, "client_lag": client_lag,
                      "keyframes_sent": keyframes, "cpu": cpu_seconds(os.getpid())}), flush=True)
    for room, node in sorted({(p.room, p.node) for p in peers}):
        await asyncio.to_thread(media_client.call, connection, "end", 30, node=node, room=room)
    for peer in peers:
        await peer.pc.close()


# -- one configuration ------------------------------------------------------------------------
def recorded_fps(recordings: Path):
    import av

    fps, frames, segments, bad, longest = [], 0, 0, 0, 0.0
    for path in sorted(recordings.rglob("*.webm")):
        longest = max(longest, json.loads(path.with_suffix(".json").read_text())["duration"])
        with av.open(str(path)) as container:
            pts, keys = [], []
            for packet in container.demux(container.streams.video[0]):
                if packet.size:
                    pts.append(packet.pts)
                    keys.append(packet.is_keyframe)
        segments += 1
        frames += len(pts)
        if not keys or not keys[0]:
            bad += 1
        if len(pts) > 30:
            fps.append((len(pts) - 1) / ((pts[-1] - pts[0]) / 1000))
    return {"segments": segments, "frames": frames, "not_keyframe_first": bad,
            "longest_s": longest,
            "fps_min": min(fps) if fps else 0, "fps_mean": sum(fps) / len(fps) if fps else 0}


def place_rooms(heartbeats: list[dict], calls: int) -> list[str]:
    """The process of each new room, as web's `place()` chooses it: the live process with the
    lowest load / capacity (then the lowest load), where load = the calls in its heartbeat +
    the rooms placed on it since (all of them here: the heartbeat comes every 5 s)."""
    load = {n["ident"]: n.get("calls", 0) for n in heartbeats}
    capacity = {n["ident"]: max(1, n.get("capacity", 1)) for n in heartbeats}
    placement = []
    for _ in range(calls):
        free = [n["ident"] for n in heartbeats if load[n["ident"]] < capacity[n["ident"]]]
        if not free:
            raise SystemExit(f"no capacity left for {calls} calls: {heartbeats}")
        best = min(free, key=lambda i: (load[i] / capacity[i], load[i]))
        load[best] += 1
        placement.append(best)
    return placement


class Media:
    """One `python -m app.media` of the run, addressed by its ident (its own command list)."""

    def __init__(self, args, recordings: Path, capacity: int, transcode: bool, log_path: Path):
        from tests.support.processes import free_port

        self.port = free_port()
        env = {**os.environ, "REDIS_URL": args.redis_url, "RECORDINGS_ROOT": str(recordings),
               "MEDIA_HEALTH_PORT": str(self.port), "MEDIA_CAPACITY": str(capacity),
               "RECORDING_MIN_FREE_MB": "200", "PYTHONUNBUFFERED": "1",
               "MEDIA_TRANSCODE": "1" if transcode else ""}
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "app.media"], cwd=ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.ident = None

    def wait_ready(self, connection, deadline: float):
        """Its ident from its health check, then a `ping` through its own list."""
        import urllib.request

        from app.media import client as media_client

        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"media process exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise SystemExit("media process did not start")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz",
                                            timeout=0.5) as response:
                    ident = json.loads(response.read())["ident"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
                continue
            if media_client.call(connection, "ping", timeout=0.5, node=ident):
                self.ident = ident
                return

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def run_config(args, size: str, calls: int, processes: int, transcode: bool, clip: Path,
               workdir: Path):
    import redis

    from app.media import NODE_PREFIX, client as media_client

    tag = f"{size}-{calls}-k{processes}-{'t' if transcode else 'h'}"
    recordings = workdir / f"rec-{tag}"
    recordings.mkdir(parents=True)
    connection = redis.Redis.from_url(args.redis_url)
    others = [n.get("ident") for n in media_client.nodes(connection)]
    if others:
        # Every command of the run goes to the run's own processes (node=ident), so another
        # media process on this database does not take them; it does share the CPUs.
        print(f"warning: other media processes are live on {args.redis_url}: {others}",
              flush=True)
    capacity = args.capacity or max(5, -(-calls // processes))
    media = []
    clients = None
    try:
        for k in range(processes):
            media.append(Media(args, recordings, capacity, transcode,
                               workdir / f"media-{tag}-{k + 1}.log"))
        deadline = time.monotonic() + 30
        for m in media:
            m.wait_ready(connection, deadline)
        by_ident = {m.ident: m for m in media}
        heartbeats = []
        for m in media:   # the heartbeat web reads (written at start, then every 5 s)
            while not (raw := connection.get(NODE_PREFIX + m.ident)):
                if time.monotonic() > deadline:
                    raise SystemExit(f"no heartbeat from {m.ident}")
                time.sleep(0.05)
            heartbeats.append(json.loads(raw))
        placement = place_rooms(heartbeats, calls)
        clients = subprocess.Popen(
            [sys.executable, __file__, "--_clients", str(calls), "--clip", str(clip),
             "--redis-url", args.redis_url, "--recordings", str(recordings),
             "--record", "0" if transcode else "1", "--source", args.source,
             "--client-nice", str(args.client_nice), "--client-rcvbuf", str(args.client_rcvbuf),
             "--placement", json.dumps(placement)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if clients.stdout.readline().strip() != "READY":
            raise SystemExit("client process failed")
        time.sleep(args.warmup)
        c0, w0 = [cpu_seconds(m.pid) for m in media], time.monotonic()
        k0 = cpu_seconds(clients.pid)
        clients.stdin.write("MARK\n")
        clients.stdin.flush()
        time.sleep(args.window)
        c1, w1 = [cpu_seconds(m.pid) for m in media], time.monotonic()
        k1 = cpu_seconds(clients.pid)
        pongs = [media_client.call(connection, "ping", timeout=5, node=m.ident,
                                   lag_window=args.window) for m in media]
        rss = [rss_mb(m.pid) for m in media]
        for i, ident in enumerate(placement):
            status = media_client.call(connection, "status", timeout=5, node=ident,
                                       room=f"bench-{i}")
            if not status or len(status.get("participants", [])) != 2:
                raise SystemExit(f"room bench-{i} on {ident} has {status}")
        clients.stdin.write("STOP\n")
        clients.stdin.flush()
        report = json.loads(clients.stdout.readline())
        clients.wait(60)
    finally:
        if clients and clients.poll() is None:
            clients.kill()
            clients.wait(10)
        for m in media:
            m.stop()
    elapsed = w1 - w0
    per_process = []
    for k, m in enumerate(media):
        placed = placement.count(m.ident)
        per_process.append({"ident": m.ident, "calls": placed,
                            "cores": (c1[k] - c0[k]) / elapsed, "rss_mb": rss[k],
                            "lag": (pongs[k] or {}).get("loop_lag", {}),
                            "heartbeat_calls": (pongs[k] or {}).get("calls")})
    cores = sum(p["cores"] for p in per_process)
    worst = max(per_process, key=lambda p: p["lag"].get("p99_ms", 0))
    keyframes = report.get("keyframes_sent") or [0]
    result = {"size": size, "calls": calls, "processes": processes,
              "mode": "transcode" if transcode else "forward",
              "keyframes_per_stream": sum(keyframes) / len(keyframes),
              "cores": cores, "per_call": cores / calls,
              "rss_mb": sum(p["rss_mb"] for p in per_process),
              "client_cores": (k1 - k0) / elapsed, "per_process": per_process,
              "lag": worst["lag"], "relayed_fps_min": min(report["relayed_fps"]),
              "relayed_fps_mean": sum(report["relayed_fps"]) / len(report["relayed_fps"]),
              "sent_fps_min": min(report["sent_fps"], default=None),
              "client_lag": report.get("client_lag", {}),
              "load_average": os.getloadavg()[0]}
    if not transcode:
        result["recorded"] = recorded_fps(recordings)
    shutil.rmtree(recordings, ignore_errors=True)
    return result


def lag_cell(lag):
    return f"{lag.get('p50_ms', 0):.2f} / {lag.get('p99_ms', 0):.2f} / {lag.get('max_ms', 0):.1f}"


def fmt_row(r, forward_by_key):
    rec = r.get("recorded")
    cells = [r["mode"], r["size"], str(r["calls"]), str(r["processes"]), f"{r['cores']:.3f}",
             f"{r['per_call']:.3f}", f"{r['rss_mb']:.0f}", f"{r['relayed_fps_min']:.1f}",
             f"{rec['fps_min']:.1f} / {rec['fps_mean']:.1f} ({rec['segments']}, longest "
             f"{rec['longest_s']:.1f} s, {rec['not_keyframe_first']} not keyframe-first)"
             if rec else "-",
             "-" if r["sent_fps_min"] is None else f"{r['sent_fps_min']:.1f}",
             lag_cell(r["lag"]),
             f"{r['client_cores']:.2f} (lag p99 {r['client_lag'].get('p99_ms', 0):.0f} ms)"]
    if r["mode"] == "forward":
        target = f"{r['per_call'] / TARGET_CORE_PER_CALL:.2f}x of 0.12" if r["size"] == "vga" else "-"
    else:
        fwd = forward_by_key.get((r["size"], r["calls"], r["processes"]))
        target = f"{r['per_call'] / fwd['per_call']:.1f}x forward" if fwd else "-"
    cells.append(target)
    return "| " + " | ".join(cells) + " |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default="vga,hd")
    parser.add_argument("--calls", default="1,2,5,10")
    parser.add_argument("--media-processes", default="2", metavar="K[,K...]",
                        help="media processes the calls are placed on (default 2, the "
                             "launcher's MEDIA_PROCESSES); 1 = the per-call cost and the "
                             "transcode ratio; a list runs each, alternating")
    parser.add_argument("--transcode-calls", default="1,2",
                        help="transcoding runs, with K = 1 only (default 1,2)")
    parser.add_argument("--capacity", type=int, default=0,
                        help="MEDIA_CAPACITY of each process (default max(5, ceil(N / K)))")
    parser.add_argument("--repeat", type=int, default=1, help="run every configuration R times")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL",
                                                              "redis://127.0.0.1:6379/9"))
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--client-nice", type=int, default=10,
                        help="niceness of the client process (default 10)")
    parser.add_argument("--client-rcvbuf", type=int, default=4 << 20,
                        help="SO_RCVBUF of the client peers' UDP sockets, bytes (default 4 MiB, "
                             "capped by net.core.rmem_max; 0 = aioice's 256 KiB)")
    parser.add_argument("--source", choices=("browser", "player"), default="browser",
                        help="browser: paced tracks that send a keyframe only when asked "
                             "(default); player: MediaPlayer(decode=False) playing the clip, "
                             "a keyframe every 2 s whatever is asked")
    # internal: the client process
    parser.add_argument("--_clients", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    parser.add_argument("--recordings", help=argparse.SUPPRESS)
    parser.add_argument("--record", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--placement", default="[]", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._clients:
        # The peers stand in for browsers on other machines: on this shared machine they
        # give way to the media processes, whose own loop lag is what is measured (too high a
        # value starves them when other work runs on the machine).
        os.nice(args.client_nice)
        args.record = bool(args.record)
        asyncio.run(run_clients(args))
        return
    if args.quick:
        args.sizes, args.calls, args.transcode_calls = "vga", "2,10", "1"
        args.warmup, args.window = 4.0, 8.0
    sizes = [s for s in args.sizes.split(",") if s]
    calls = [int(n) for n in args.calls.split(",") if n]
    ks = [int(k) for k in args.media_processes.split(",") if k]
    transcode_calls = [int(n) for n in args.transcode_calls.split(",") if n] if 1 in ks else []
    workdir = Path(tempfile.mkdtemp(prefix="videoar-bench-media-"))
    load = os.getloadavg()[0]
    print(f"{platform.python_version()}, {os.cpu_count()} CPUs (shared with the load "
          f"generator), load average {load:.2f}; warm-up {args.warmup:.0f} s, window "
          f"{args.window:.0f} s; media processes {ks}; work dir {workdir}", flush=True)
    results = []
    try:
        for size in sizes:
            clip = make_clip(workdir / f"{size}.webm", size, args.warmup + args.window + 15,
                             gop=60 if args.source == "player" else 30)
            for _ in range(args.repeat):
                for n in calls:
                    for k in ks:
                        results.append(run_config(args, size, n, k, False, clip, workdir))
                        print(json.dumps(results[-1]), flush=True)
                for n in transcode_calls:
                    results.append(run_config(args, size, n, 1, True, clip, workdir))
                    print(json.dumps(results[-1]), flush=True)
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
    forward = {(r["size"], r["calls"], r["processes"]): r for r in results
               if r["mode"] == "forward"}
    print()
    print("| mode | size | calls | media processes | media cores (sum) | per call | RSS MB (sum) | "
          "relayed fps min | recorded fps min / mean (segments) | sent fps min | "
          "loop lag p50 / p99 / max ms (worst process) | client cores | vs target |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(fmt_row(r, forward))
    multi = [r for r in results if r["processes"] > 1]
    if multi:
        print()
        print("| size | calls | process | its calls | cores | RSS MB | loop lag p50 / p99 / max ms |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in multi:
            for k, p in enumerate(r["per_process"], 1):
                print(f"| {r['size']} | {r['calls']} | {k} of {r['processes']} | {p['calls']} | "
                      f"{p['cores']:.3f} | {p['rss_mb']:.0f} | {lag_cell(p['lag'])} |")
    print()
    for r in results:
        label = f"{r['size']} N={r['calls']} K={r['processes']}"
        if r["mode"] == "forward" and r["size"] == "vga":
            ok = r["per_call"] <= TARGET_CORE_PER_CALL
            print(f"{label}: {r['per_call']:.3f} core/call "
                  f"({'meets' if ok else 'MISSES'} <= {TARGET_CORE_PER_CALL})")
        if r["mode"] == "forward":
            fps = r["recorded"]["fps_min"]
            p99 = [p["lag"].get("p99_ms", 99) for p in r["per_process"]]
            print(f"{label}: recorded fps min {fps:.2f} "
                  f"({'meets' if fps >= TARGET_FPS else 'MISSES'} >= {TARGET_FPS}); "
                  f"loop lag p99 per process {' / '.join(f'{x:.2f}' for x in p99)} ms"
                  + (f" ({'meets' if max(p99) <= TARGET_LAG_P99_MS else 'MISSES'}"
                     f" <= {TARGET_LAG_P99_MS} at 10 calls)" if r["calls"] == 10 else ""))
        if r["mode"] == "transcode" and (r["size"], r["calls"], 1) in forward:
            ratio = r["per_call"] / forward[(r["size"], r["calls"], 1)]["per_call"]
            print(f"{label}: transcoding costs {ratio:.1f}x forwarding+recording "
                  f"({'meets' if ratio >= TARGET_RATIO else 'MISSES'} >= {TARGET_RATIO}x)")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
