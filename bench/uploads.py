"""Upload benchmark: time per page to store and render one phone photo; over HTTP, uploads per
second with concurrent clients and a web worker's memory while it receives a 20 MB file.

    .venv/bin/python bench/uploads.py [--runs 30] [--root DIR]
    .venv/bin/python bench/uploads.py --http [--clients 20] [--duration 30]
    .venv/bin/python bench/uploads.py --http --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_uploads

For a 4 MB 12-megapixel JPEG (EXIF orientation 6 and GPS, like a phone's) and a 12-megapixel
HEIC, it times `store_upload`: the original streamed into a LocalStorage (hashed, fsynced,
linked), the type checked from the content, the web rendition and thumbnail made and stored.
Each run stores new content (the previous run's files are deleted), so nothing is skipped as
already stored. Target (issue 3): a 4 MB phone JPEG stored and thumbnailed in <= 250 ms.

`--http` measures through the real web server, as production runs it: a fresh SQLite database
in a temporary directory (or, with `--database-url`, a PostgreSQL database dropped and created
again) migrated with `flask db upgrade` and seeded with `flask setup`, a
private redis-server on a Unix socket, gunicorn with gthread workers (`wsgi:app`, the launcher's
settings) on a free port. Each client is a request of its own, entered as a client does: the
link with its token, the protocol and a solved "Não sou um robô" proof of work; then
1. uploads per second: `--clients` clients at once, each sending the 4 MB 12-megapixel JPEG as
   new pages (each copy made unique by a JPEG comment, so none is deduplicated) for
   `--duration` seconds, over keep-alive connections (2 workers × 8 threads);
2. memory: a gunicorn of one worker, started afresh and warmed up with three small uploads,
   receives one 20 MB file; the worker's peak resident memory (VmHWM in /proc/<pid>/status,
   reset through /proc/<pid>/clear_refs just before) minus its resident memory before the
   upload, `--memory-runs` times per file. Target (issue 3): a 20 MB upload adds <= 30 MB.
   Files: 20 MB of random bytes (received, streamed to the storage, refused from its content:
   the receiving path alone), a 20 MB 48-megapixel JPEG and a 19 MB PDF of eight A4 pages
   scanned at 300 dpi (received, stored and rendered).
The load generator runs on the same machine and takes some of its CPU.
"""
import argparse
import http.client
import io
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

from common import fresh_postgres  # bench/common.py (the script's own folder is on the path)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import PIL  # noqa: E402
import pillow_heif  # noqa: E402
from PIL import ExifTags, Image  # noqa: E402

from app.services import uploads  # noqa: E402
from app.services.storage import LocalStorage  # noqa: E402

TARGET_MS = 250
TARGET_ADDED_MB = 30
ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
WIDTH, HEIGHT = 4032, 3024  # a 12-megapixel phone sensor
JPEG_TARGET_BYTES = 4_000_000


def phone_scene() -> Image.Image:
    """A 12-megapixel picture with a phone photo's entropy: gradients, shapes and sensor noise."""
    gradient = Image.linear_gradient("L").resize((WIDTH, HEIGHT))
    scene = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                                gradient.transpose(Image.Transpose.ROTATE_180)))
    card = Image.new("RGB", (2400, 1500), (235, 225, 200))  # an ID card on a table
    scene.paste(card, (800, 760))
    noise = Image.merge("RGB", [Image.effect_noise((WIDTH, HEIGHT), 40) for _ in range(3)])
    return Image.blend(scene, noise, 0.25)


def phone_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Benchphone"
    exif[ExifTags.Base.Orientation] = 6  # held upright: the sensor's picture is turned
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "S"
    gps[ExifTags.GPS.GPSLatitude] = (23.0, 33.0, 7.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (46.0, 38.0, 2.0)
    return exif


def phone_jpeg(scene: Image.Image) -> bytes:
    """The scene as a JPEG of about 4 MB (the quality is searched for)."""
    best = None
    for quality in range(80, 100):
        out = io.BytesIO()
        scene.save(out, "JPEG", quality=quality, exif=phone_exif())
        best = out.getvalue()
        if len(best) >= JPEG_TARGET_BYTES:
            break
    return best


def phone_heic(scene: Image.Image) -> bytes:
    """The scene as an iPhone writes it: HEVC in 512-pixel grid tiles, about 2 MB."""
    saved = pillow_heif.options.GRID_TILE_SIZE
    pillow_heif.options.GRID_TILE_SIZE = 512
    try:
        out = io.BytesIO()
        scene.save(out, "HEIF", quality=45, exif=phone_exif().tobytes())
        return out.getvalue()
    finally:
        pillow_heif.options.GRID_TILE_SIZE = saved


def measure(storage: LocalStorage, data: bytes, runs: int) -> tuple[list[float], object]:
    times = []
    result = None
    for _ in range(runs + 1):  # the first run warms caches and is not counted
        start = time.perf_counter()
        result = uploads.store_upload(io.BytesIO(data), storage)
        elapsed = time.perf_counter() - start
        times.append(elapsed * 1000)
        for blob in (result.original, result.renditions[0].web, result.renditions[0].thumbnail):
            storage.delete(blob.sha256)
    return times[1:], result


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(0.95 * len(ordered)) - 1)]


# --- over HTTP --------------------------------------------------------------------------------

def cpf_for(n: int) -> str:
    """A valid CPF (check digits computed) made from `n`."""
    digits = [int(d) for d in f"{100_000_000 + n:09d}"[-9:]]
    for length in (9, 10):
        total = sum(d * w for d, w in zip(digits, range(length + 1, 1, -1)))
        digits.append((total * 10 % 11) % 10)
    return "".join(map(str, digits))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.1)


class Site:
    """A fresh database, a private Redis and the requests the clients will enter with."""

    def __init__(self, clients: int, database_url: str | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="videoar-bench-http-"))
        self.redis_socket = self.dir / "redis.sock"
        if database_url:
            fresh_postgres(database_url)
        self.database = "PostgreSQL" if database_url else "SQLite"
        self.env = {
            **os.environ,
            "FLASK_APP": "wsgi.py",
            "VIDEOAR_INSTANCE": str(self.dir / "instance"),
            "DATABASE_URL": database_url or f"sqlite:///{self.dir / 'videoar.db'}",
            "REDIS_URL": f"unix://{self.redis_socket}?db=0",
            "SECRET_KEY": secrets.token_urlsafe(32),
            "SMTP_HOST": "",
            # Every client enters from 127.0.0.1, and each adds many pages: the point is to
            # measure the uploads, not these limits.
            "PROTOCOL_RATE_LIMIT": "100000 per minute",
            "UPLOAD_MAX_PAGES_PER_KIND": "100000",
        }
        self.redis = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.redis_socket),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)], stdout=subprocess.DEVNULL, start_new_session=True)
        wait_for(self.redis_socket.exists, 15, "redis-server")
        for command in (["db", "upgrade"], ["setup"]):
            subprocess.run([str(VENV_BIN / "flask"), *command], cwd=ROOT, env=self.env,
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.requests = self._open_requests(clients)

    def _open_requests(self, n):
        """`n` e-CPF requests, as (protocol, token of the documents link), made by this script
        run in the site's environment (`--open-requests`)."""
        result = subprocess.run([sys.executable, __file__, "--open-requests", str(n)], cwd=ROOT,
                                env=self.env, check=True, capture_output=True, text=True)
        return [tuple(x) for x in json.loads(result.stdout.strip().splitlines()[-1])]

    def close(self):
        if self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(15)
        shutil.rmtree(self.dir, ignore_errors=True)


class WebServer:
    """gunicorn as app/launcher.py runs it, on a free port."""

    def __init__(self, site: Site, workers: int, threads: int):
        self.port = free_port()
        self.log = open(site.dir / f"gunicorn-{self.port}.log", "ab")
        env = {**site.env, "PUBLIC_URL": f"http://127.0.0.1:{self.port}"}
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{self.port}", "--worker-class",
             "gthread", "--workers", str(workers), "--threads", str(threads), "--timeout", "120",
             "wsgi:app"], cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        wait_for(self._answers, 60, "gunicorn")
        wait_for(lambda: len(self.worker_pids()) == workers, 60, "gunicorn's workers")

    def _answers(self):
        if self.proc.poll() is not None:
            sys.exit(f"gunicorn exited with {self.proc.returncode}; see {self.log.name}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/")
            return conn.getresponse().status == 200
        except OSError:
            return False

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        self.log.close()


class Client:
    """One client's browser: a keep-alive connection and the session cookie."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        self.cookie = None
        self.csrf = None

    def request(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        if self.cookie:
            headers["Cookie"] = self.cookie
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # gunicorn closed the idle keep-alive connection: a browser opens another.
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
        data = response.read()
        cookie = response.getheader("Set-Cookie")
        if cookie:
            self.cookie = cookie.split(";", 1)[0]
        token = re.search(rb'name="csrf_token" value="([^"]+)"', data)
        if token:
            self.csrf = token.group(1).decode()
        return response.status, data

    def enter(self, protocol: str, token: str):
        """The link, the protocol and a solved robot check, then the upload page."""
        import altcha

        status, _ = self.request("GET", f"/documentos/{token}")
        assert status == 200, status
        status, data = self.request("GET", "/altcha/desafio")
        challenge = altcha.Challenge.from_dict(json.loads(data))
        solution = altcha.solve_challenge(challenge, timeout=60)
        payload = altcha.Payload(challenge, solution).to_base64()
        form = urlencode({"protocol": protocol, "altcha": payload, "csrf_token": self.csrf})
        status, _ = self.request("POST", f"/documentos/{token}", form,
                                 {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 302, f"entering with the protocol answered {status}"
        status, _ = self.request("GET", "/documentos/envio")
        assert status == 200, status

    def upload(self, data: bytes, name: str) -> int:
        boundary = secrets.token_hex(16)
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n"
                f"{self.csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"{name}\"\r\nContent-Type: image/jpeg\r\n\r\n").encode()
        body = head + data + f"\r\n--{boundary}--\r\n".encode()
        status, _ = self.request("POST", "/documentos/envio/identity/paginas", body, {
            "Content-Type": f"multipart/form-data; boundary={boundary}", "HX-Request": "true"})
        return status


def unique_jpeg(data: bytes, n: int) -> bytes:
    """The same picture with a comment segment (COM) of its own: other bytes, other SHA-256."""
    comment = f"bench upload {n} {secrets.token_hex(8)}".encode()
    return data[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + data[2:]


def open_requests(n: int):
    """Print `n` new e-CPF requests of the database in the environment as JSON."""
    from datetime import date

    from sqlalchemy import select

    from app import create_app
    from app.extensions import db
    from app.models import Product
    from app.services import links, people, requests

    app = create_app()
    out = []
    with app.app_context():
        product = db.session.execute(select(Product).where(Product.code == "ecpf-a1")).scalar_one()
        for i in range(n):
            person = people.register_person(cpf_for(i), name=f"Cliente {i}",
                                            birth_date=date(1980, 1, 1),
                                            email=f"cliente{i}@bench.example",
                                            phone="+5511987654321")
            cert_request = requests.open_request(product=product, holder=person, origin="agent")
            db.session.commit()
            out.append((cert_request.protocol,
                        links.token_for(links.current_link(cert_request, "documents"))))
    print(json.dumps(out))


def throughput(site: Site, photo: bytes, clients: int, duration: float, workers: int,
               threads: int):
    server = WebServer(site, workers, threads)
    try:
        people = [Client(server.port) for _ in range(clients)]
        for client, (protocol, token) in zip(people, site.requests):
            client.enter(protocol, token)
        for i, client in enumerate(people):  # warm-up: one page each, not counted
            assert client.upload(unique_jpeg(photo, -1 - i), "warm.jpg") == 200
        latencies, failures = [], []
        lock = threading.Lock()
        start_line = threading.Barrier(clients + 1)
        stop_at = [0.0]

        def run(client, index):
            start_line.wait()
            n = 0
            while time.monotonic() < stop_at[0]:
                body = unique_jpeg(photo, index * 100_000 + n)
                t0 = time.perf_counter()
                status = client.upload(body, f"IMG_{index:02d}_{n:04d}.jpg")
                elapsed = time.perf_counter() - t0
                with lock:
                    (latencies if status == 200 else failures).append(
                        elapsed if status == 200 else status)
                n += 1

        threads_ = [threading.Thread(target=run, args=(c, i)) for i, c in enumerate(people)]
        for t in threads_:
            t.start()
        load_before = os.getloadavg()[0]
        stop_at[0] = time.monotonic() + duration
        t0 = time.monotonic()
        start_line.wait()
        for t in threads_:
            t.join()
        wall = time.monotonic() - t0
    finally:
        server.stop()
    return latencies, failures, wall, load_before


def status_kb(pid: int) -> dict:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def memory(site: Site, small: bytes, data: bytes, expected: int, threads: int):
    """RSS added to a lone gunicorn worker, freshly started and warmed up, by receiving `data`:
    (status, RSS before, peak, RSS after in kB, seconds)."""
    server = WebServer(site, 1, threads)
    try:
        [pid] = server.worker_pids()
        protocol, token = site.requests[0]
        client = Client(server.port)
        client.enter(protocol, token)
        for n in range(3):  # warm-up: imports, connections, the decoders' first use
            assert client.upload(unique_jpeg(small, n), "warm.jpg") == 200
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = status_kb(pid)
        t0 = time.perf_counter()
        status = client.upload(data, "arquivo.jpg")
        elapsed = time.perf_counter() - t0
        after = status_kb(pid)
        assert status == expected, f"HTTP {status}, expected {expected}"
    finally:
        server.stop()
    return status, before["VmRSS"], after["VmHWM"], after["VmRSS"], elapsed


def big_jpeg(target_bytes: int) -> bytes:
    """A 48-megapixel (8000x6000) photo of about `target_bytes` (the quality is searched)."""
    width, height = 8000, 6000
    gradient = Image.linear_gradient("L").resize((width, height))
    scene = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                                gradient.transpose(Image.Transpose.ROTATE_180)))
    noise = Image.merge("RGB", [Image.effect_noise((width, height), 40) for _ in range(3)])
    scene = Image.blend(scene, noise, 0.3)
    best = None
    for quality in range(60, 100, 2):
        out = io.BytesIO()
        scene.save(out, "JPEG", quality=quality, exif=phone_exif())
        if out.tell() > target_bytes:
            break
        best = out.getvalue()
    return best


def scanned_pdf(target_bytes: int) -> bytes:
    """An office's scan: A4 pages at 300 dpi (2480x3508 JPEGs), as many as fit `target_bytes`."""
    width, height = 2480, 3508
    gradient = Image.linear_gradient("L").resize((width, height))
    paper = Image.merge("RGB", (gradient, gradient.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                                gradient.transpose(Image.Transpose.ROTATE_180)))
    pages, best = [], None
    while True:
        noise = Image.merge("RGB", [Image.effect_noise((width, height), 40 + len(pages))
                                    for _ in range(3)])
        pages.append(Image.blend(paper, noise, 0.3))
        out = io.BytesIO()
        pages[0].save(out, "PDF", save_all=True, append_images=pages[1:], resolution=300,
                      quality=85)
        if out.tell() > target_bytes:
            return best
        best = out.getvalue()


def main_http(args):
    scene = phone_scene()
    photo = phone_jpeg(scene)
    small = io.BytesIO()
    scene.resize((1600, 1200)).save(small, "JPEG", quality=85)
    target = 20_000_000
    files = {
        "20 MB of random bytes (refused after streaming)": (os.urandom(target), 422),
        "20 MB JPEG, 8000x6000 (stored and rendered)": (big_jpeg(target), 200),
    }
    pdf = scanned_pdf(target)
    files[f"{len(pdf) / 1e6:.0f} MB PDF, {pdf.count(b'/Type /Page') - pdf.count(b'/Type /Pages')} "
          f"A4 pages at 300 dpi (stored and rendered)"] = (pdf, 200)
    site = Site(args.clients, args.database_url)
    print(f"Python {platform.python_version()}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; gunicorn gthread; {site.database}; private redis-server")
    try:
        latencies, failures, wall, load = throughput(site, photo, args.clients, args.duration,
                                                     args.workers, args.threads)
        done = len(latencies)
        ms = [x * 1000 for x in latencies]
        print(f"\nuploads per second: {args.clients} clients, each sending a {len(photo) / 1e6:.1f} MB "
              f"{WIDTH}x{HEIGHT} JPEG again and again for {args.duration:.0f} s; "
              f"{args.workers} workers x {args.threads} threads; load average at the start "
              f"{load:.1f}")
        print(f"  {done} uploads in {wall:.1f} s = {done / wall:.2f} uploads/s "
              f"({done * len(photo) / wall / 1e6:.1f} MB/s); failures: {len(failures)} "
              f"{sorted(set(failures)) if failures else ''}")
        if failures:
            for log in sorted(site.dir.glob("gunicorn-*.log")):
                errors = [line for line in log.read_text(errors="replace").splitlines()
                          if re.search(r"Error|Exception|locked", line)]
                print(f"  errors in {log.name}: " + " | ".join(sorted(set(errors))[-5:]))
        if ms:
            print(f"  latency per upload: p50 {statistics.median(ms):.0f} ms, p95 {p95(ms):.0f} ms, "
                  f"max {max(ms):.0f} ms")
        print(f"\nmemory of a lone gunicorn worker ({args.threads} threads), started afresh and "
              f"warmed up for each run, receiving one file ({args.memory_runs} runs each):")
        print(f"  {'file':<56} {'HTTP':>4} {'RSS before':>11} {'peak':>9} {'added':>9} "
              f"{'RSS after':>10} {'time':>7}")
        verdicts = []
        for label, (data, expected) in files.items():
            worst = 0
            for _ in range(args.memory_runs):
                status, before, peak, after_rss, elapsed = memory(
                    site, small.getvalue(), data, expected, args.threads)
                added = (peak - before) / 1024
                worst = max(worst, added)
                print(f"  {label:<56} {status:>4} {before / 1024:8.1f} MB {peak / 1024:6.1f} MB "
                      f"{added:6.1f} MB {after_rss / 1024:7.1f} MB {elapsed:6.2f}s")
            verdicts.append(f"{label}: {'met' if worst <= TARGET_ADDED_MB else 'MISSED'} "
                            f"(worst {worst:.1f} MB)")
        print(f"target: a 20 MB upload adds <= {TARGET_ADDED_MB} MB to the worker's memory")
        for verdict in verdicts:
            print(f"  {verdict}")
    finally:
        site.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--root", help="storage root (default: a new temporary directory)")
    parser.add_argument("--http", action="store_true",
                        help="measure through gunicorn: uploads per second, a worker's memory")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--memory-runs", type=int, default=3)
    parser.add_argument("--database-url", help="--http on this PostgreSQL database (dropped and "
                        "created again; its name must start with 'bench') instead of SQLite")
    parser.add_argument("--open-requests", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.open_requests:
        return open_requests(args.open_requests)
    if args.http:
        return main_http(args)

    scene = phone_scene()
    samples = {"JPEG": phone_jpeg(scene), "HEIC": phone_heic(scene)}
    root = Path(args.root or tempfile.mkdtemp(prefix="videoar-bench-uploads-"))
    storage = LocalStorage(root)
    print(f"Python {platform.python_version()}, Pillow {PIL.__version__}, pillow-heif "
          f"{pillow_heif.__version__}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; storage {root}; {args.runs} runs each")
    print(f"{'input':<34} {'mean ms':>8} {'p95 ms':>8} {'min ms':>8} {'p95/target':>11}")
    for name, data in samples.items():
        times, result = measure(storage, data, args.runs)
        processed = result.processed
        label = (f"{name} {len(data) / 1e6:.1f} MB {WIDTH}x{HEIGHT}"
                 f" -> {processed.web.width}x{processed.web.height}")
        print(f"{label:<34} {statistics.mean(times):8.1f} {p95(times):8.1f} {min(times):8.1f}"
              f" {p95(times) / TARGET_MS:10.2f}x")
    print(f"target: a 4 MB phone JPEG stored and thumbnailed in <= {TARGET_MS} ms "
          "(p95/target <= 1.00 meets it)")


if __name__ == "__main__":
    main()
