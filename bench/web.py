"""Web benchmark: the agents' dashboard with 10,000 requests in the database, and the login
and request-creation pages, under concurrent load, against the real web server.

    .venv/bin/python bench/web.py                       # SQLite in a temporary directory
    .venv/bin/python bench/web.py \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/bench_web

What it does, as production would run it:
1. a fresh database (a SQLite file in a temporary directory, or the PostgreSQL database named
   in the URL, dropped and created again: its name must start with "bench"), migrated with
   Alembic, seeded with bulk inserts: office, products, agents, people with valid CPFs,
   companies, and N certificate requests spread over states, products, agents and the last
   months;
2. a private redis-server on a Unix socket;
3. gunicorn with gthread workers from this virtualenv (`wsgi:app`, the launcher's settings) on a
   free port;
4. clients on keep-alive HTTP connections, each with its own staff session, measuring one
   scenario after another for `--duration` seconds (after a short warm-up).

It prints, per scenario, p50/p95/p99/max latency, requests per second, the server's CPU time
per request (gunicorn's processes, plus PostgreSQL's backends for this database: a figure that
holds however busy the machine is with other work) and the load average, then the dashboard's
p95 against the target (50 ms). The clients run on the same machine and take some of its CPU.
Login's rate limit is raised for the run (LOGIN_RATE_LIMIT), since the point is to measure it.
"""
import argparse
import http.client
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

from common import fresh_postgres  # bench/common.py (the script's own folder is on the path)

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TARGET_P95_MS = 50.0
STAFF_PASSWORD = "bench-senha-forte-2026"

FIRST_NAMES = ["Maria", "José", "Ana", "João", "Francisca", "Antônio", "Adriana", "Carlos",
               "Juliana", "Paulo", "Márcia", "Pedro", "Fernanda", "Lucas", "Patrícia", "Marcos",
               "Aline", "Luiz", "Camila", "Gabriel", "Sandra", "Rafael", "Letícia", "Daniel"]
LAST_NAMES = ["Silva", "Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves",
              "Pereira", "Lima", "Gomes", "Costa", "Ribeiro", "Martins", "Carvalho", "Almeida",
              "Lopes", "Soares", "Fernandes", "Vieira", "Barbosa", "Rocha", "Dias", "Nunes"]
# Roughly how an office's requests spread over the states (most are in progress).
STATE_WEIGHTS = {
    "requested": 2, "documents_pending": 24, "documents_submitted": 12, "pendency": 6,
    "documents_approved": 6, "scheduled": 8, "in_conference": 1, "conference_done": 3,
    "second_check": 3, "approved": 4, "issued": 20, "revoked": 1, "cancelled": 5, "expired": 5,
}
PRODUCT_WEIGHTS = {"ecpf-a1": 40, "ecpf-a3": 20, "ecnpj-a1": 20, "ecnpj-a3": 12,
                   "enotariado": 8}
AGENTS = 8


# --- database ---------------------------------------------------------------------------------

def cpf_digits(body: int) -> str:
    """A CPF: the 9-digit body and its two mod-11 check digits."""
    digits = [int(c) for c in f"{body:09d}"]
    for _ in range(2):
        total = sum(d * w for d, w in zip(digits, range(len(digits) + 1, 1, -1)))
        digits.append(total * 10 % 11 % 10)
    return "".join(map(str, digits))


def cnpj_digits(body: int) -> str:
    """A CNPJ: the 12-digit body (8 + branch 0001) and its check digits."""
    from stdnum.br import cnpj

    base = f"{body:08d}0001"
    return base + cnpj.calc_check_digits(base)


def seed(app, n_requests: int, rng: random.Random) -> dict:
    """Fill the database the way months of work would; returns what the clients need."""
    from sqlalchemy import func, insert, select, text
    from stdnum import luhn
    from stdnum.br import cpf as cpf_check

    from app.extensions import db
    from app.models import (CertificateRequest, Company, OfficeClosure, Person, Product,
                            StaffUser)
    from app.services import staff
    from app.services.admin import ensure_default_products
    from app.services.office import get_settings

    t0 = time.perf_counter()
    settings = get_settings()
    settings.authority_name = "AR Benchmark"
    settings.uf = "SP"
    ensure_default_products()
    staff.create_staff("admin@bench.example", "Administrador", STAFF_PASSWORD,
                       ["admin", "agent", "verifier"])
    for n in range(AGENTS):
        staff.create_staff(f"agente{n}@bench.example",
                           f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)} (agente {n})",
                           STAFF_PASSWORD, ["agent"])
    today = date.today()
    db.session.add_all([OfficeClosure(day=today - timedelta(days=d), description="Fechado")
                        for d in (17, 45)])
    db.session.commit()
    products = {p.code: p.id for p in db.session.execute(select(Product)).scalars()}
    agent_ids = db.session.execute(select(StaffUser.id).where(StaffUser.is_agent.is_(True))
                                   ).scalars().all()

    n_people = max(10, int(n_requests * 0.7))
    bodies = rng.sample(range(100_000_000, 999_999_999), n_people)
    now = datetime.now(timezone.utc)
    people = []
    for i, body in enumerate(bodies, start=1):
        value = cpf_digits(body)
        assert cpf_check.is_valid(value), value
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        people.append(dict(
            id=i, cpf=value, name=f"{first} {rng.choice(LAST_NAMES)} {last}",
            birth_date=date(1950, 1, 1) + timedelta(days=rng.randrange(20000)),
            email=f"{first.lower()}.{i}@cliente.example",
            phone=f"+55119{rng.randrange(10**7, 10**8)}",
            rg_number=str(rng.randrange(10**8, 10**9)),
            rg_issuer="SSP", rg_uf="SP", created_at=now, updated_at=now))
    db.session.execute(insert(Person), people)

    n_companies = max(1, n_requests // 6)
    companies = [dict(id=i, cnpj=cnpj_digits(10_000_000 + i), legal_name=f"Empresa {i} Ltda",
                      city="São Paulo", uf="SP", responsible_id=rng.randrange(1, n_people + 1),
                      created_at=now)
                 for i in range(1, n_companies + 1)]
    db.session.execute(insert(Company), companies)

    protocols = set()
    while len(protocols) < n_requests:
        body = str(rng.randrange(10**8, 10**9))
        protocols.add(body + luhn.calc_check_digit(body))
    states, state_w = zip(*STATE_WEIGHTS.items())
    codes, code_w = zip(*PRODUCT_WEIGHTS.items())
    requests = []
    for i, protocol in enumerate(protocols, start=1):
        code = rng.choices(codes, code_w)[0]
        company = companies[rng.randrange(n_companies)] if code.startswith("ecnpj") else None
        holder = company["responsible_id"] if company else rng.randrange(1, n_people + 1)
        # Mostly recent, a long tail of old ones (up to about a year).
        changed = now - timedelta(minutes=min(525_000, int(rng.expovariate(1 / 30_000))))
        agent = None if rng.random() < 0.15 else rng.choice(agent_ids)
        requests.append(dict(
            id=i, protocol=protocol, product_id=products[code], holder_id=holder,
            company_id=company["id"] if company else None,
            state=rng.choices(states, state_w)[0], origin="agent" if agent else "public",
            assigned_agent_id=agent, created_by_id=agent,
            created_at=changed - timedelta(minutes=rng.randrange(0, 30_000)),
            state_changed_at=changed))
    for start in range(0, len(requests), 2000):
        db.session.execute(insert(CertificateRequest), requests[start:start + 2000])
    if db.engine.dialect.name == "postgresql":
        for table in ("person", "company", "certificate_request"):
            db.session.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                    f"(SELECT max(id) FROM {table}))"))
    db.session.commit()
    # Planner statistics and (PostgreSQL) the visibility map, as autovacuum keeps them on a
    # database in use; right after a bulk load they are missing.
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    else:
        db.session.execute(text("ANALYZE"))
        db.session.commit()
    total = db.session.execute(select(func.count()).select_from(CertificateRequest)).scalar_one()
    print(f"seeded {total} requests, {n_people} people, {n_companies} companies, "
          f"{len(agent_ids)} agents in {time.perf_counter() - t0:.1f}s", flush=True)
    return {"products": list(products.values()), "agents": agent_ids,
            "people": n_people, "logins": ["admin@bench.example"] +
            [f"agente{n}@bench.example" for n in range(AGENTS)]}


# --- processes --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("redis-server not found (Debian: apt-get install redis-server)")
    sock = workdir / "redis.sock"
    proc = subprocess.Popen([server, "--port", "0", "--unixsocket", str(sock),
                             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
                            start_new_session=True)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            sys.exit("redis-server did not start")
        time.sleep(0.05)
    return proc, f"unix://{sock}?db=0"


def start_web(env, port: int, workers: int, threads: int, log: Path) -> subprocess.Popen:
    """gunicorn as the launcher runs it (gthread workers), logging to `log`."""
    out = open(log, "ab")
    proc = subprocess.Popen(
        [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread",
         "--workers", str(workers), "--threads", str(threads), "--timeout", "120",
         "--access-logfile", str(log.with_suffix(".access.log")), "wsgi:app"],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/equipe/entrar")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"gunicorn did not start; see {log}")
        time.sleep(0.2)


def stop(proc: subprocess.Popen):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _proc_stat(pid: str):
    """(ppid, cpu seconds, command line) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks, cmdline


class ServerCPU:
    """CPU time used by the web server (gunicorn master and workers) and, for PostgreSQL, by
    the backends serving the benchmark's database: the cost of a request however busy the
    machine is with other work."""

    def __init__(self, gunicorn_pid: int, pg_database: str | None):
        self.gunicorn_pid = gunicorn_pid
        self.pg_marker = f" {pg_database} " if pg_database else None

    def snapshot(self) -> dict[str, dict[int, float]]:
        """CPU seconds so far of each process, by kind."""
        found = {"web": {}, "db": {}}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            stat = _proc_stat(pid)
            if stat is None:
                continue
            ppid, cpu, cmdline = stat
            if int(pid) == self.gunicorn_pid or ppid == self.gunicorn_pid:
                found["web"][int(pid)] = cpu
            elif self.pg_marker and cmdline.startswith("postgres:") and self.pg_marker in cmdline:
                found["db"][int(pid)] = cpu
        return found

    @staticmethod
    def used(before, after) -> dict[str, float]:
        """CPU seconds used between two snapshots (a process that started in between counts
        from zero; one that ended is lost, which connection pooling makes rare)."""
        return {kind: sum(cpu - before[kind].get(pid, 0.0) for pid, cpu in after[kind].items())
                for kind in after}


# --- clients ----------------------------------------------------------------------------------

CSRF = re.compile(r'"X-CSRFToken": "([^"]+)"')


class Client:
    """One browser: a keep-alive connection and its cookies."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.cookies: dict[str, str] = {}

    def request(self, method, path, form=None, headers=None):
        """Send one request; return (status, body, seconds)."""
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            h["Content-Type"] = "application/x-www-form-urlencoded"
        t0 = time.perf_counter()
        try:
            self.conn.request(method, path, body=body, headers=h)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            return 0, b"", time.perf_counter() - t0
        elapsed = time.perf_counter() - t0
        for header in resp.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if value and "Max-Age=0" not in header and "1970" not in header:
                self.cookies[name.strip()] = value
            else:
                self.cookies.pop(name.strip(), None)
        return resp.status, data, elapsed

    def csrf_token(self, path="/equipe/entrar") -> str:
        status, body, _ = self.request("GET", path)
        match = CSRF.search(body.decode("utf-8", "replace"))
        if not match:
            raise RuntimeError(f"no CSRF token on {path} (status {status})")
        return match.group(1)

    def login(self, email) -> float:
        """Log in (fetching the form's token first); return the POST's seconds."""
        token = self.csrf_token()
        status, _, elapsed = self.request("POST", "/equipe/entrar",
                                          form={"email": email, "password": STAFF_PASSWORD},
                                          headers={"X-CSRFToken": token})
        if status != 302:
            raise RuntimeError(f"login of {email} answered {status}")
        return elapsed


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def run_scenario(name, port, concurrency, duration, warmup, prepare, step, cpu):
    """`prepare(client, i)` once per client (not measured); `step(client, rng)` returns
    (ok, seconds) for one measured request. Clients loop until the time is up."""
    clients = []
    for i in range(concurrency):
        c = Client(port)
        prepare(c, i)
        clients.append(c)
    latencies: list[list[float]] = [[] for _ in clients]
    errors = [0] * concurrency
    start_line = threading.Barrier(concurrency + 1)
    window = {}

    def loop(i):
        rng = random.Random(i)
        c = clients[i]
        start_line.wait()
        while time.perf_counter() < window["warm_until"]:
            step(c, rng)
        while time.perf_counter() < window["end"]:
            ok, seconds = step(c, rng)
            if ok:
                latencies[i].append(seconds)
            else:
                errors[i] += 1

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    now = time.perf_counter()
    window["warm_until"] = now + warmup
    window["end"] = now + warmup + duration
    start_line.wait()
    time.sleep(max(0.0, window["warm_until"] - time.perf_counter()))
    cpu_before, load_before = cpu.snapshot(), os.getloadavg()[0]
    clients_cpu = time.process_time()
    time.sleep(max(0.0, window["end"] - time.perf_counter()))
    cpu_used, load_after = cpu.used(cpu_before, cpu.snapshot()), os.getloadavg()[0]
    clients_cpu = time.process_time() - clients_cpu
    for t in threads:
        t.join()
    all_latencies = sorted(s for per in latencies for s in per)
    n = len(all_latencies)
    result = {
        "name": name, "concurrency": concurrency, "requests": n, "errors": sum(errors),
        "rps": n / duration,
        "p50": percentile(all_latencies, 50) * 1000, "p95": percentile(all_latencies, 95) * 1000,
        "p99": percentile(all_latencies, 99) * 1000,
        "max": (all_latencies[-1] * 1000) if n else float("nan"),
        "mean": statistics.fmean(all_latencies) * 1000 if n else float("nan"),
        # Server CPU per request (ms): web processes, and PostgreSQL's backends.
        "cpu_web": cpu_used["web"] * 1000 / max(n, 1),
        "cpu_db": cpu_used["db"] * 1000 / max(n, 1),
        "cpu_clients": clients_cpu * 1000 / max(n, 1),
        "load": max(load_before, load_after),
    }
    print(f"  {name:<44} c={concurrency:<2} {n:>6} req {result['rps']:>7.1f} req/s  "
          f"p50 {result['p50']:6.1f}  p95 {result['p95']:6.1f}  p99 {result['p99']:6.1f}  "
          f"max {result['max']:6.1f} ms  errors {result['errors']}  "
          f"cpu/req {result['cpu_web']:.1f}+{result['cpu_db']:.1f} ms "
          f"(clients {result['cpu_clients']:.1f})  "
          f"load {result['load']:.1f}", flush=True)
    for c in clients:
        c.conn.close()
    return result


def scenarios(port, data, concurrency, duration, warmup, cpu, only=None):
    logins = data["logins"]
    products, agents = data["products"], data["agents"]
    hx = {"HX-Request": "true", "HX-Target": "queue"}

    def logged_in(c, i):
        c.login(logins[i % len(logins)])

    def get(path, expect=200, headers=None):
        def step(c, rng):
            status, _, seconds = c.request("GET", path, headers=headers)
            return status == expect, seconds
        return step

    def fragment(c, rng):
        query = rng.choice([
            {}, {"estado": "documents_submitted"}, {"estado": "documents_pending"},
            {"produto": rng.choice(products)}, {"agente": rng.choice(agents)},
            {"pagina": rng.randrange(2, 6)},
            {"estado": "scheduled", "agente": rng.choice(agents)},
        ])
        status, body, seconds = c.request("GET", "/painel/?" + urlencode(query), headers=hx)
        return status == 200 and body.lstrip().startswith(b'<section id="queue"'), seconds

    def creation_page(c, rng):
        person = rng.randrange(1, data["people"] + 1)
        status, _, seconds = c.request("GET", f"/pessoas/{person}/certificacao/remota")
        return status == 200, seconds

    def login_post(c, rng):
        c.cookies.clear()
        token = c.csrf_token()
        status, _, seconds = c.request(
            "POST", "/equipe/entrar", form={"email": rng.choice(logins),
                                            "password": STAFF_PASSWORD},
            headers={"X-CSRFToken": token})
        return status == 302, seconds

    def nothing(c, i):
        pass

    # The dashboard at rising concurrency: where its p95 crosses the target.
    levels = sorted({c for c in (1, 2, 4) if c < concurrency} | {concurrency})
    plan = [("dashboard, full page (GET /painel/)", c, logged_in, get("/painel/"))
            for c in levels]
    plan += [
        ("dashboard, htmx fragment, filters and pages", concurrency, logged_in, fragment),
        ("login page (GET /equipe/entrar)", concurrency, nothing, get("/equipe/entrar")),
        ("login (POST /equipe/entrar, argon2)", concurrency, nothing, login_post),
        ("request creation, agent (GET /pessoas/<id>/certificacao/remota)", concurrency,
         logged_in, creation_page),
        ("request creation, public (GET /solicitar)", concurrency, nothing,
         get("/solicitar")),
    ]
    return [run_scenario(name, port, c, duration, warmup, prepare, step, cpu)
            for name, c, prepare, step in plan if not only or only in name]


def markdown(results, backend):
    lines = [f"| scenario ({backend}) | clients | req/s | p50 ms | p95 ms | p99 ms | max ms | "
             "errors | server CPU ms/req | clients' CPU ms/req | load avg |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        cpu = f"{r['cpu_web']:.1f}" + (f" + {r['cpu_db']:.1f} db" if r["cpu_db"] else "")
        lines.append(f"| {r['name']} | {r['concurrency']} | {r['rps']:.1f} | {r['p50']:.1f} | "
                     f"{r['p95']:.1f} | {r['p99']:.1f} | {r['max']:.1f} | {r['errors']} | "
                     f"{cpu} | {r['cpu_clients']:.1f} | {r['load']:.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL URL of a database of the benchmark's "
                        "own (dropped and created again); default: SQLite in a temporary dir")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20, help="seconds per scenario")
    parser.add_argument("--warmup", type=float, default=2, help="seconds before measuring")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (launcher: 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads each (launcher: 8)")
    parser.add_argument("--only", help="run only the scenarios whose name contains this text, "
                        "e.g. 'dashboard'")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="videoar-bench-web-"))
    if args.database_url:
        fresh_postgres(args.database_url)
        database_url = args.database_url
        backend = "PostgreSQL"
    else:
        database_url = f"sqlite:///{workdir / 'bench.db'}"
        backend = "SQLite"
    redis_proc, redis_url = start_redis(workdir)
    web = None
    try:
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": database_url, "REDIS_URL": redis_url,
            "SECRET_KEY": "bench-secret-key-not-for-production",
            "VIDEOAR_INSTANCE": str(workdir / "instance"), "PUBLIC_URL": "http://localhost",
            "LOGIN_RATE_LIMIT": "1000000 per minute", "LOGIN_MAX_FAILURES": "1000000",
            "SMTP_HOST": "",
        })
        os.environ.update(env)  # before the app's config is imported
        sys.path.insert(0, str(ROOT))
        from flask_migrate import upgrade

        from app import create_app
        from app.extensions import db

        app = create_app()
        with app.app_context():
            upgrade()
            data = seed(app, args.requests, random.Random(args.seed))
            db.session.remove()
            db.engine.dispose()

        port = free_port()
        web = start_web(env, port, args.workers, args.threads, workdir / "gunicorn.log")
        print(f"{backend}, {args.requests} requests; gunicorn gthread {args.workers}x"
              f"{args.threads} on :{port}; {os.cpu_count()} CPUs; {args.duration:g}s per "
              "scenario", flush=True)
        pg_database = None
        if args.database_url:
            from sqlalchemy.engine import make_url

            pg_database = make_url(args.database_url).database
        cpu = ServerCPU(web.pid, pg_database)
        results = scenarios(port, data, args.concurrency, args.duration, args.warmup, cpu,
                            args.only)
    finally:
        if web is not None:
            stop(web)
        stop(redis_proc)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(markdown(results, backend))
    print()
    for r in results:
        if r["name"].startswith("dashboard"):
            verdict = "meets" if r["p95"] <= TARGET_P95_MS else "MISSES"
            cpu = r["cpu_web"] + r["cpu_db"]
            print(f"{r['name']}, {r['concurrency']} client(s): p95 {r['p95']:.1f} ms = "
                  f"{r['p95'] / TARGET_P95_MS:.2f} x target ({TARGET_P95_MS:g} ms): {verdict}; "
                  f"server CPU {cpu:.1f} ms/request: at most ~{os.cpu_count() * 1000 / cpu:.0f} "
                  f"req/s on {os.cpu_count()} cores (~"
                  f"{os.cpu_count() * 1000 / (cpu + r['cpu_clients']):.0f} with these clients)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
