"""The web inbox in a real browser: Debian's chromium, headless, driven by Playwright, against
`smsinbox serve` started here as its own process.

No browser is ever downloaded: the tests use the system's chromium (`apt-get install
--no-install-recommends chromium`, which .ci/run does) and skip without it, unless
SMSINBOX_TEST_REQUIRE_PEERS=1 says every peer must be there. Accessibility is checked with
axe-core (tests/browser, installed by `make test` with npm ci). With SMSINBOX_SCREENSHOTS set
to a directory, the main pages are photographed there at phone and desktop width (how
docs/images/web was made).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

playwright = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, expect  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
AXE = Path(__file__).parent / "browser" / "node_modules" / "axe-core" / "axe.min.js"
REQUIRE_PEERS = os.environ.get("SMSINBOX_TEST_REQUIRE_PEERS") == "1"
SCREENSHOTS = os.environ.get("SMSINBOX_SCREENSHOTS")

ALICE = "447700900001"
NOBODYS = "447700900077"
DAVE = "447700900088"
PASSWORD = "alice-password"
ADMIN_TOKEN = "browser-admin-token"
PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 800}

if CHROMIUM is None or not AXE.exists():
    missing = "chromium" if CHROMIUM is None else "axe-core (npm ci --prefix tests/browser)"
    if REQUIRE_PEERS:
        raise RuntimeError(f"{missing} is missing and SMSINBOX_TEST_REQUIRE_PEERS=1")
    pytest.skip(f"{missing} is not installed", allow_module_level=True)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, object]) -> dict[str, object]:
    # The system's browser, never a download; no sandbox for a root user in a container.
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": ["--no-sandbox"]}


class Server:
    """`smsinbox serve` on a fresh SQLite store, with an account and an upstream token."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "SMSINBOX_DATABASE_URL": f"sqlite:///{workdir / 'web.db'}",
                    "SMSINBOX_DEFAULT_TIME_ZONE": "Europe/Vienna",
                    "SMSINBOX_ADMIN_TOKEN": ADMIN_TOKEN,
                    # Push to loopback, once: a receiver that is down makes a dead letter.
                    "SMSINBOX_PUSH_ALLOW_PRIVATE": "true",
                    "SMSINBOX_PUSH_RETRY_SCHEDULE": "0"}  # fmt: skip
        self.log = (workdir / "server.log").open("wb")
        self.cli("db", "upgrade")
        self.cli("user", "add", "alice", "--password", PASSWORD, "--msisdn", ALICE)
        self.cli("user", "add", "carol", "--password", PASSWORD)
        self.cli("push", "add", "carol", f"http://127.0.0.1:{free_port()}/down")
        # Dave's console page, photographed and checked, with a dead letter in every run.
        self.cli("user", "add", "dave", "--password", PASSWORD, "--msisdn", DAVE)
        self.cli("push", "add", "dave", f"http://127.0.0.1:{free_port()}/down")
        self.token = self.cli("upstream", "add", "web-tests").split()[-1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "smsinbox", "serve", "--port", str(self.port)],
            env=self.env, stdout=self.log, stderr=self.log,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("smsinbox serve did not start; see " + self.log.name)
            time.sleep(0.1)

    def cli(self, *args: str) -> str:
        return subprocess.run([sys.executable, "-m", "smsinbox", *args], env=self.env,
                              capture_output=True, text=True, check=True).stdout  # fmt: skip

    def receive(self, sender: str, text: str, to: str = ALICE) -> None:
        """A message from the network, as an upstream delivers it."""
        answer = httpx.get(self.url + "/inbound/sms", params={
            "token": self.token, "from": sender, "to": to, "text": text})  # fmt: skip
        assert answer.status_code == 200, answer.text

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("web"))
    yield running
    running.stop()


def sign_in(page: Page, server: Server, login: str = "alice") -> None:
    page.goto(server.url + "/")
    page.get_by_label("Username or phone number").fill(login)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name=re.compile("^Inbox"))).to_be_visible()


def test_a_message_that_arrives_after_the_page_loaded_appears_without_a_reload(
    page: Page, server: Server
) -> None:
    sign_in(page, server, login=ALICE)  # the number works as well as the username
    server.receive("4915100000001", "hello, live")
    expect(page.get_by_text("hello, live")).to_be_visible(timeout=10_000)
    expect(page).to_have_title(re.compile(r"^\(\d+\) Inbox"))
    page.get_by_role("link", name=re.compile("4915100000001")).click()
    expect(page.get_by_text("hello, live")).to_be_visible()
    # In the open thread too, and read at once there.
    server.receive("4915100000001", "and another")
    expect(page.get_by_text("and another")).to_be_visible(timeout=10_000)


def test_reply_lock_and_delete_in_a_thread(page: Page, server: Server) -> None:
    server.receive("4915100000002", "keep this one")
    server.receive("4915100000002", "throw this away")
    sign_in(page, server)
    page.get_by_role("link", name=re.compile("4915100000002")).click()
    page.get_by_label("Reply").fill("thanks, got it")
    page.get_by_role("button", name="Send", exact=True).click()
    expect(page.get_by_role("status").filter(has_text="Message sent.")).to_be_visible()
    expect(page.get_by_text("thanks, got it")).to_be_visible()
    page.locator("li.message", has_text="keep this one").get_by_role(
        "button", name=re.compile("^Lock")
    ).click()
    kept = page.locator("li.message", has_text="keep this one")
    expect(kept.get_by_text("Locked", exact=True)).to_be_visible()
    gone = page.locator("li.message", has_text="throw this away")
    gone.get_by_role("button", name=re.compile("^Delete")).click()
    expect(page.get_by_role("status").filter(has_text="Message deleted.")).to_be_visible()
    expect(page.get_by_text("throw this away")).to_have_count(0)


def test_search_finds_and_highlights(page: Page, server: Server) -> None:
    server.receive("4915100000003", "the courier brings a parcel today")
    sign_in(page, server)
    page.get_by_role("link", name="Search").click()
    page.get_by_label("Search messages").fill("parcel")
    page.get_by_label("Search messages").press("Enter")
    expect(page.locator("mark", has_text="parcel")).to_be_visible()


def test_contacts_name_a_conversation(page: Page, server: Server) -> None:
    server.receive("4915100000004", "who am I?")
    sign_in(page, server)
    page.get_by_role("link", name="Contacts").click()
    page.get_by_label("Name").fill("Berta Beispiel")
    page.get_by_label(re.compile("^Phone numbers")).fill("4915100000004")
    page.get_by_role("button", name="Add contact").click()
    expect(page.get_by_role("link", name=re.compile("Berta Beispiel"))).to_be_visible()
    page.get_by_role("link", name="Inbox", exact=True).click()
    expect(page.get_by_role("link", name=re.compile("Berta Beispiel"))).to_be_visible()


def test_the_operator_assigns_an_unrouted_number_and_replays_a_dead_letter(
    page: Page, server: Server
) -> None:
    server.receive("4915100000006", "for a number nobody has", to=NOBODYS)
    page.goto(server.url + "/operator")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.get_by_role("link", name="Unrouted", exact=True).click()
    expect(page.get_by_text("for a number nobody has")).to_be_visible()
    page.get_by_label(f"Give {NOBODYS} to").select_option("carol")
    page.get_by_role("button", name="Assign").click()
    expect(page.get_by_role("status")).to_have_text(re.compile("Number assigned"))
    # Carol's push endpoint is down: her message's one attempt fails into a dead letter.
    dead_letter_on(page, server, "carol")
    page.get_by_label(re.compile("^Queue every push again since")).fill("0")
    page.get_by_role("button", name="Replay deliveries").click()
    expect(page.get_by_role("status")).to_have_text("Deliveries queued again.")


def test_the_sign_in_form_in_keyboard_order(page: Page, server: Server) -> None:
    page.goto(server.url + "/signin")
    focused = "document.activeElement.id || document.activeElement.textContent.trim()"
    assert page.evaluate(focused) == "login"  # where a person starts typing
    order = []
    for _ in range(2):
        page.keyboard.press("Tab")
        order.append(page.evaluate(focused))
    assert order == ["password", "Sign in"]
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")  # before the form: the way home, and past it to the content
    assert page.evaluate(focused) == "smsinbox"


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_main_pages_fit_the_screen_and_pass_axe(
    browser: Browser, server: Server, viewport: dict[str, int]
) -> None:
    server.receive("4915100000005", "a message to show on every page")
    # axe is loaded into each page; the pages' own policy forbids scripts from elsewhere.
    context = browser.new_context(viewport=viewport, bypass_csp=True)
    page = context.new_page()
    name = "phone" if viewport is PHONE else "desktop"
    photograph(page, server.url + "/signin", f"signin-{name}")
    audit(page, "/signin")
    sign_in(page, server)
    pages = {"inbox": "/inbox", "thread": "/inbox/4915100000005", "search": "/search?q=message",
             "compose": "/compose", "contacts": "/contacts"}  # fmt: skip
    for title, path in pages.items():
        photograph(page, server.url + path, f"{title}-{name}")
        audit(page, path)
        fits(page, path, viewport)
    # And the operator's console.
    photograph(page, server.url + "/operator/signin", f"operator-signin-{name}")
    audit(page, "/operator/signin")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    server.receive("4915100000007", "for dave's dead push", to=DAVE)
    dead_letter_on(page, server, "dave")
    console = {"overview": "/operator", "accounts": "/operator/accounts",
               "account": "/operator/accounts/dave", "unrouted": "/operator/unrouted",
               "upstreams": "/operator/upstreams"}  # fmt: skip
    for title, path in console.items():
        photograph(page, server.url + path, f"operator-{title}-{name}")
        audit(page, path)
        fits(page, path, viewport)
    context.close()


def dead_letter_on(page: Page, server: Server, username: str) -> None:
    """The account's console page, once it lists a dead letter (its push receiver is down:
    the one attempt fails)."""
    dead = page.get_by_role("cell", name="dead letter")
    for _ in range(100):  # a page shows the attempts made when it was asked for
        page.goto(f"{server.url}/operator/accounts/{username}")
        if dead.count():
            break
        page.wait_for_timeout(100)
    expect(dead.first).to_be_visible()


def fits(page: Page, path: str, viewport: dict[str, int]) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{path} is {overflow} px wider than a {viewport['width']} px screen"


def photograph(page: Page, url: str, name: str) -> None:
    page.goto(url)
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=False)


def audit(page: Page, path: str) -> None:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => JSON.stringify((await axe.run()).violations)")
    violations = [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:3])
                  for v in json.loads(result)]  # fmt: skip
    assert violations == [], f"{path}: {violations}"
