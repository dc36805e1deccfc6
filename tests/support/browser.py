"""Real browser tests: the app under gunicorn, a real worker, Debian's Chromium via Playwright.

    @pytest.mark.browser
    def test_x(live_server, start_worker, desktop, phone):
        start_worker(PUBLIC_URL=live_server.url)   # emails go to the outbox (no SMTP_HOST)
        desktop.goto("/equipe/entrar")             # relative to live_server.url
        expect(desktop.get_by_role("heading", name="Acesso da equipe")).to_be_visible()
        assert_accessible(phone)                   # axe-core: no serious or critical issue
        screenshot(phone, "10-client-home.png")    # only with VIDEOAR_SCREENSHOTS=1

Every page records what the browser reports as an error (console errors, which include CSP
refusals, and uncaught exceptions) in `page.browser_errors`; the `desktop` and `phone`
fixtures fail the test if any page logged one.
"""
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from .processes import ROOT, free_port, wait_until

VENV_BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = ROOT / "docs" / "screenshots"
DESKTOP_VIEWPORT = {"width": 1280, "height": 800}
EXPECT_TIMEOUT_MS = 20_000


class LiveServer:
    """`gunicorn wsgi:app` with the gthread worker class, as `app/launcher.py` runs it, on a
    free port of 127.0.0.1 (a secure context for the browser, as HTTPS would be)."""

    def __init__(self, env, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "PUBLIC_URL": self.url}
        self.log_path = log_path
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "ab")
        argv = [str(VENV_BIN / "gunicorn"), "--bind", f"127.0.0.1:{self.port}", "--worker-class",
                "gthread", "--workers", self.env.get("WEB_WORKERS", "2"), "--threads",
                self.env.get("WEB_THREADS", "8"), "--timeout", "120", "--access-logfile", "-",
                "wsgi:app"]
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._answers, timeout=60, interval=0.2, message=f"gunicorn on {self.url}")
        return self

    def _answers(self):
        if self.proc.poll() is not None:
            pytest.fail(f"gunicorn exited with {self.proc.returncode}:\n{self.output()}")
        try:
            with urllib.request.urlopen(self.url + "/", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        if getattr(self, "log", None):
            self.log.close()

    def output(self):
        return Path(self.log_path).read_text(errors="replace")


@pytest.fixture
def live_server(process_env, tmp_path):
    """The web process of this test's database and Redis, answering on `live_server.url`."""
    server = LiveServer(process_env, tmp_path / "gunicorn.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    manager = sync_playwright().start()
    yield manager
    manager.stop()


@pytest.fixture(scope="module")
def browser(playwright):
    """One Chromium per test module (the machine has two cores to share)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield chromium
    chromium.close()


def _watch(page):
    if hasattr(page, "browser_errors"):
        return
    errors = page.browser_errors = []

    def on_console(msg):
        # Failed loads are judged by `on_response`, which knows what was loaded: a page
        # answering 404 or 422 on purpose is fine, a missing script or style is not.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            errors.append(f"console: {msg.text}")

    def on_response(response):
        if any(status == response.status and pattern.search(response.url)
               for status, pattern in getattr(page, "expected_responses", ())):
            return
        if response.status >= 400 and response.request.resource_type != "document":
            errors.append(f"{response.status} for {response.request.resource_type} "
                          f"{response.url}")

    page.on("console", on_console)
    page.on("response", on_response)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))


def _page_in(context):
    context.on("page", _watch)
    page = context.new_page()
    _watch(page)
    page.set_default_timeout(EXPECT_TIMEOUT_MS)
    return page


def _close_checking_errors(context):
    errors = [e for page in context.pages for e in getattr(page, "browser_errors", [])]
    context.close()
    assert not errors, "the browser reported errors:\n" + "\n".join(errors)


@pytest.fixture
def desktop(browser, live_server):
    """A staff member's desktop browser (1280×800), pages relative to the live server."""
    context = browser.new_context(viewport=DESKTOP_VIEWPORT, locale="pt-BR",
                                  timezone_id="America/Sao_Paulo", base_url=live_server.url)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    yield _page_in(context)
    _close_checking_errors(context)


@pytest.fixture
def phone(browser, playwright, live_server):
    """A client's phone: Pixel 7 emulation (viewport, touch, user agent)."""
    context = browser.new_context(**playwright.devices["Pixel 7"], locale="pt-BR",
                                  timezone_id="America/Sao_Paulo", base_url=live_server.url)
    yield _page_in(context)
    _close_checking_errors(context)


@contextmanager
def expected_response(page, status: int, url_pattern: str):
    """The block makes the page load a URL matching `url_pattern` (a regex) that answers
    `status` on purpose (e.g. the 422 of an htmx upload of a refused file): waits for that
    answer, and does not count it as an error of the page."""
    pattern = re.compile(url_pattern)
    expected = (status, pattern)
    page.expected_responses = [*getattr(page, "expected_responses", ()), expected]
    try:
        with page.expect_response(lambda r: r.status == status and pattern.search(r.url)):
            yield
    finally:
        page.expected_responses.remove(expected)


def assert_accessible(page, label=None):
    """axe-core on the page as it is now: no violation of serious or critical impact."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    report = "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} — "
        + "; ".join(", ".join(n["target"]) for n in v["nodes"]) for v in bad)
    assert not bad, f"accessibility violations on {label or page.url}:\n{report}"


def screenshot(page, name: str, full_page: bool = True):
    """Save docs/screenshots/<name> when VIDEOAR_SCREENSHOTS=1 (normal runs leave the
    tracked files alone). `full_page=False` keeps to the viewport, as for a modal dialog."""
    if os.environ.get("VIDEOAR_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page, animations="disabled",
                    caret="hide", scale="css")
