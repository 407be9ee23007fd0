"""Real-browser tests: Playwright drives Debian's chromium (never a downloaded browser)."""

import os
import shutil

import pytest
from playwright.sync_api import expect

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")

# Assertions wait up to 15 s (Playwright's default is 5) before they fail: CI runs the SQLite
# and PostgreSQL suites side by side on two cores, and a server round trip that re-times two
# routes (moving a stop) took longer than 5 s there once. Something that never appears still fails.
expect.set_options(timeout=15_000)


def pytest_collection_modifyitems(config, items):
    if shutil.which(CHROMIUM) or os.path.exists(CHROMIUM):
        return
    skip = pytest.mark.skip(reason=f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
        ],
    }


@pytest.fixture(scope="session", autouse=True)
def _plain_http():
    """The live server speaks plain HTTP: no redirect to HTTPS, no Secure-only cookies.

    Session-scoped and set before the live server starts, because SecurityMiddleware reads
    SECURE_SSL_REDIRECT once when the server's handler is built.
    """
    from django.conf import settings

    names = ("SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE")
    saved = {name: getattr(settings, name) for name in names}
    for name in names:
        setattr(settings, name, False)
    # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still
    # plain synchronous code, so tell Django not to refuse them (only while browser tests run).
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    for name, value in saved.items():
        setattr(settings, name, value)


@pytest.fixture
def csp_violations(page):
    """Console messages about the Content-Security-Policy (must stay empty: CFG-4)."""
    seen = []
    page.on("console", lambda msg: "Content Security Policy" in msg.text and seen.append(msg.text))
    # No internet in tests: map tiles are refused, and the page must still work.
    page.route("https://*.openstreetmap.org/**", lambda route: route.abort())
    page.route("https://tile.openstreetmap.org/**", lambda route: route.abort())
    return seen


@pytest.fixture
def worker(live_server, transactional_db):
    """A real `manage.py qcluster` process working on the test database."""
    import signal
    import subprocess
    import sys

    from django.conf import settings
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        url = f"sqlite:///{db['NAME']}"
    else:
        url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update(DATABASE_URL=url, Q_WORKERS="1", LOG_LEVEL="WARNING")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"],
        cwd=settings.BASE_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
