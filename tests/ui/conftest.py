"""Fixtures for the browser suite: the runledger that run.sh started, its REST API, one headless
Chromium driven by selenium through Debian's chromedriver, screenshots, and bounded waits."""

import base64
import contextlib
import json
import os
import tempfile
import uuid

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

# Every wait is bounded; none of them sleeps for a fixed time.
WAIT_SECONDS = 15
DESKTOP = (1280, 900)
PHONE = (390, 844)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--lang=en-US",
]


@pytest.fixture(scope="session")
def base() -> str:
    url = os.environ.get("RUNLEDGER_HTTP_URL")
    if not url:
        pytest.fail("RUNLEDGER_HTTP_URL is not set: run this suite with tests/ui/run.sh")
    return url


class Api:
    """The REST API, for arranging what the browser then shows (with a bearer token and the
    server's certificate for a server with auth and TLS)."""

    def __init__(self, base: str, token: str = "", ca: str = ""):
        self.base = f"{base}/apis/v2beta1"
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        if ca:
            # REQUESTS_CA_BUNDLE and the like would override session.verify.
            self.session.trust_env = False
            self.session.verify = ca

    def call(self, method: str, path: str, body=None, ok=True):
        response = self.session.request(method, self.base + path, json=body, timeout=10)
        if ok:
            assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.text else {}

    def create_experiment(self, name: str, **fields) -> dict:
        return self.call("POST", "/experiments", {"display_name": name, **fields})

    def create_run(self, name: str, **fields) -> dict:
        body = {"display_name": name, "pipeline_id": "ui-suite-pipeline", **fields}
        return self.call("POST", "/runs", body)

    def report(self, run_id: str, state: str, **fields) -> dict:
        return self.call("POST", f"/runs/{run_id}:reportState", {"state": state, **fields})


@pytest.fixture(scope="session")
def api(base) -> Api:
    return Api(base)


class AuthServer:
    """The second server run.sh started: TLS (Chromium trusts its certificate) and
    --auth-config with one principal whose token may read and write everything."""

    def __init__(self):
        self.base = os.environ.get("RUNLEDGER_AUTH_URL", "")
        self.token = os.environ.get("RUNLEDGER_AUTH_TOKEN", "")
        if not (self.base and self.token):
            pytest.fail("RUNLEDGER_AUTH_URL / RUNLEDGER_AUTH_TOKEN are not set: run this suite with tests/ui/run.sh")
        self.api = Api(self.base, token=self.token, ca=os.environ["RUNLEDGER_AUTH_CA"])


@pytest.fixture(scope="session")
def auth_server() -> AuthServer:
    return AuthServer()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def driver():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    profile = tempfile.mkdtemp(prefix="chromium-", dir=os.environ.get("RUNLEDGER_UI_WORK"))
    flags = CHROMIUM_FLAGS + [f"--user-data-dir={profile}", f"--window-size={DESKTOP[0]},{DESKTOP[1]}"]
    spki = os.environ.get("RUNLEDGER_AUTH_SPKI")
    if spki:
        # Trusts the auth server's self-signed certificate, and no other, by its key's hash.
        flags.append(f"--ignore-certificate-errors-spki-list={spki}")
    for flag in flags:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium never looks for (or downloads) a driver of its own.
    log = os.path.join(os.environ.get("RUNLEDGER_UI_WORK", profile), "chromedriver.log")
    service = Service(executable_path=os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"), log_output=log)
    browser = webdriver.Chrome(service=service, options=options)
    browser.set_page_load_timeout(30)
    browser.set_script_timeout(15)
    set_viewport(browser, *DESKTOP)
    yield browser
    browser.quit()


@pytest.fixture(autouse=True)
def no_script_errors(request):
    """Fails a test whose page logged a JavaScript error (network errors the test caused on
    purpose, such as a refused action, are the server's answers, not script errors)."""
    yield
    if "driver" not in request.fixturenames:
        return
    browser = request.getfixturevalue("driver")
    errors = [
        entry["message"]
        for entry in browser.get_log("browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]
    assert not errors, "the page logged errors:\n" + "\n".join(errors)


def set_viewport(browser, width: int, height: int, mobile: bool = False):
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 2 if mobile else 1, "mobile": mobile},
    )


@contextlib.contextmanager
def phone(browser):
    """A 390×844 phone viewport for the duration of the block."""
    set_viewport(browser, *PHONE, mobile=True)
    try:
        yield
    finally:
        set_viewport(browser, *DESKTOP)


def wait_for(browser, condition, message: str, seconds: float = WAIT_SECONDS):
    """Waits (bounded) until condition(browser) is truthy; fails with `message` otherwise."""
    try:
        return WebDriverWait(
            browser, seconds, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)
        ).until(condition)
    except TimeoutException:
        pytest.fail(f"timed out after {seconds}s waiting for {message}")


def text_of(browser, selector: str) -> str:
    """The rendered text of the first match ('' when none); read in one step, since the page
    redraws parts of itself as events arrive."""
    return browser.execute_script(
        "const e = document.querySelector(arguments[0]); return e ? e.innerText.trim() : ''", selector
    )


def texts_of(browser, selector: str) -> list:
    return browser.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.innerText.trim())", selector
    )


def screenshot(browser, name: str, full_page: bool = False, element=None):
    """Saves target/ui-screenshots/<name>.png: the viewport, the whole page, or one element."""
    directory = os.environ["RUNLEDGER_UI_SCREENSHOTS"]
    path = os.path.join(directory, f"{name}.png")
    browser.execute_script("document.activeElement && document.activeElement.blur()")
    if element is not None:
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.screenshot(path)
        return path
    if not full_page:
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(path)
        return path
    metrics = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics["cssContentSize"]
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
        },
    )
    with open(path, "wb") as out:
        out.write(base64.b64decode(shot["data"]))
    return path


def page_overflow(browser) -> int:
    """How many CSS pixels the page is wider than the viewport (0: no horizontal scrolling)."""
    return browser.execute_script(
        "return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth)"
        " - window.innerWidth"
    )


def dump(value) -> str:
    return json.dumps(value, indent=1, sort_keys=True)
