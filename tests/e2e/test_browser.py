"""Browser tier: Open WebUI, with the environment the rendered Deployment sets, in front of the real serve app, used
through headless chromium as a person would.

Open WebUI is the PyPI release of the image's tag (``tools.webui_local``), started three times on one data
directory, as a pod restarted on its volume: the first start is where the operator creates the admin account (the
first account is always allowed, and it closes sign-up until the next start, whatever the config says); the later
starts read sign-up from the environment again (``ENABLE_PERSISTENT_CONFIG=false``), so they are where the stack's
``openWebuiEnableSignup`` shows. The tier runs in a network namespace with loopback only (``make browser``) and
fails if a page asks for anything off this machine.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tools import webui_local
from tools.render import Render
from workloads import openwebui, rayservice

from ..conftest import rendered
from .browser import chromium, off_machine, requested_urls
from .conftest import Endpoint

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = ROOT / "build" / "browser"
WAIT_S = 60
ANSWER_TIMEOUT_S = 180


@dataclass(frozen=True)
class Account:
    name: str
    email: str
    password: str


ADMIN = Account("Stack Admin", "admin@example.com", secrets.token_urlsafe(12))


def record(key: str, value: object) -> None:
    """Figures of the run (start-up times, the answer's size) in build/browser/figures.json."""
    path = SCREENSHOT_DIR / "figures.json"
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    figures = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**figures, key: value}, indent=2) + "\n")


def _only_loopback() -> bool:
    interfaces = [line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]]
    return interfaces == ["lo"]


@dataclass
class Site:
    """One Open WebUI data directory and session key, started as often as a test needs, against ``endpoint``."""

    work: Path
    endpoint: Endpoint
    key: str = field(default_factory=lambda: secrets.token_urlsafe(32))  # the Secret's random password

    @contextmanager
    def start(self, r: Render, name: str) -> Iterator[webui_local.Server]:
        env = webui_local.local_env(
            webui_local.container(r)["env"],
            openai_url=self.endpoint.openai_url,
            data_dir=self.work / "data",
            home=self.work / "home",
            port=webui_local.free_port(),
            secrets={
                (openwebui.SECRET_NAME, openwebui.SECRET_KEY): self.key,
                (rayservice.API_KEY_SECRET, rayservice.API_KEY_SECRET_KEY): self.endpoint.api_key,
            },
        )
        log = self.work / f"open-webui-{name}.log"
        try:
            with webui_local.serve(env, webui_local.probe_paths(r), log, webui_local.venv()) as server:
                record(f"open_webui_{name}_ready_s", round(server.startup_s, 1))
                yield server
        except webui_local.WebUIError as exc:
            pytest.fail(str(exc))


@pytest.fixture(scope="session")
def offline() -> None:
    """Before anything starts: this process sees loopback only, so nothing the tier starts can reach the internet."""
    if not _only_loopback():
        pytest.fail("the browser tier runs with loopback only: `make browser` (unshare --net) sets that up")


@pytest.fixture(scope="module")
def site(offline: None, endpoint: Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Site:
    (SCREENSHOT_DIR / "figures.json").unlink(missing_ok=True)
    record("serve_app_ready_s", round(endpoint.startup_s, 1))
    return Site(tmp_path_factory.mktemp("webui"), endpoint)


@contextmanager
def page_session(profile: Path) -> Iterator[WebDriver]:
    """A fresh chromium; on the way out, the page must not have asked for anything off this machine."""
    with chromium(profile) as driver:
        yield driver
        leaks = off_machine(requested_urls(driver))
        assert leaks == [], f"the page asked for hosts off this machine: {leaks}"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    with page_session(tmp_path / "profile") as driver:
        yield driver


def wait(driver: WebDriver, timeout: float = WAIT_S) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, timeout)


def visible(driver: WebDriver, css: str, timeout: float = WAIT_S) -> WebElement:
    element: WebElement = wait(driver, timeout).until(ec.visibility_of_element_located((By.CSS_SELECTOR, css)))
    return element


def buttons(driver: WebDriver, label: str) -> list[WebElement]:
    """The displayed buttons whose text is ``label``."""
    found: list[WebElement] = driver.execute_script(
        "return [...document.querySelectorAll('button')]"
        ".filter(b => b.innerText.trim() === arguments[0] && b.getClientRects().length > 0)",
        label,
    )
    return found


def button(driver: WebDriver, label: str, timeout: float = WAIT_S) -> WebElement:
    """The first displayed button whose text is ``label``, once there is one."""
    found: list[WebElement] = wait(driver, timeout).until(lambda d: buttons(d, label))
    return found[0]


def fill(driver: WebDriver, account: Account, *, with_name: bool) -> None:
    if with_name:
        visible(driver, "input#name").send_keys(account.name)
    visible(driver, "input#email").send_keys(account.email)
    visible(driver, "input#password").send_keys(account.password)


def signed_in(driver: WebDriver) -> None:
    """The chat page's message box is there: the account is signed in and active."""
    visible(driver, "#chat-input")


def sign_in(driver: WebDriver, url: str, account: Account) -> None:
    driver.get(f"{url}/auth")
    fill(driver, account, with_name=False)
    button(driver, "Sign in").click()
    signed_in(driver)


def signup_status(url: str, account: Account) -> int:
    """The HTTP status of a sign-up request made straight to the API."""
    body = json.dumps({"name": account.name, "email": account.email, "password": account.password}).encode()
    request = urllib.request.Request(
        f"{url}/api/v1/auths/signup", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def dismiss_release_notes(driver: WebDriver) -> None:
    """Open WebUI shows its release notes once per account and release; a person closes them."""
    try:
        button(driver, "Okay, Let's Go!", timeout=15).click()
    except TimeoutException:
        return
    wait(driver).until(lambda d: not buttons(d, "Okay, Let's Go!"))


def choose_model(driver: WebDriver, model: str) -> None:
    """Open the model selector, check it lists exactly the served model, and pick it."""
    selector = visible(driver, "button[id^='model-selector-'][id$='-button']")
    selector.click()
    options_css = "#model-selector-list [role='option']"
    wait(driver).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, options_css) or buttons(d, "Manage Connections") or None
    )
    options = {o.get_attribute("data-value"): o for o in driver.find_elements(By.CSS_SELECTOR, options_css)}
    assert options, "the model list is empty (Open WebUI shows 'No models available')"
    assert list(options) == [model], f"the model list is {list(options)}, the serve app serves [{model!r}]"
    options[model].click()
    wait(driver).until(lambda d: selector.text.strip() == model)


@dataclass(frozen=True)
class Answer:
    text: str  # the answer as the page shows it at the end
    lengths: list[int]  # its length at every change of the page while it came in
    error: str  # the text of an error box in the answer's place, if any
    stored: str | None  # the answer Open WebUI saved in the chat (None: the chat could not be read)


# The last answer's text (Open WebUI renders it as markdown), sampled on every change of the page.
WATCH_ANSWER = """
window.__answer = () => {
  const all = document.querySelectorAll('#response-content-container');
  const last = all[all.length - 1];
  const prose = last ? last.querySelector('.markdown-prose') : null;
  return prose ? prose.innerText : '';
};
window.__lengths = [];
new MutationObserver(() => window.__lengths.push(window.__answer().length))
  .observe(document.body, {subtree: true, childList: true, characterData: true});
"""
ANSWER_ERROR = """
const all = document.querySelectorAll('#response-content-container');
const last = all[all.length - 1];
if (!last) return '';
const prose = last.querySelector('.markdown-prose');
return last.innerText.replace(prose ? prose.innerText : '', '').trim();
"""
STORED_ANSWER = """
const done = arguments[arguments.length - 1];
const id = location.pathname.split('/c/')[1];
fetch(`/api/v1/chats/${id}`, {headers: {Authorization: `Bearer ${localStorage.token}`}})
  .then(r => r.json())
  .then(c => {
    const messages = Object.values(c.chat.history.messages).filter(m => m.role === 'assistant');
    done(messages.length ? messages[messages.length - 1].content : '');
  })
  .catch(() => done(null));
"""


def chat(driver: WebDriver, message: str) -> Answer:
    """Type ``message``, send it, and wait until the answer is complete (its Regenerate button shows)."""
    driver.execute_script(WATCH_ANSWER)
    box = visible(driver, "#chat-input")
    box.click()
    box.send_keys(message)
    visible(driver, "#send-message-button").click()
    wait(driver).until(ec.url_contains("/c/"))
    wait(driver, ANSWER_TIMEOUT_S).until(
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('button[aria-label=\"Regenerate\"]')]"
            ".some(b => b.getClientRects().length > 0)"
        )
    )
    return Answer(
        text=driver.execute_script("return window.__answer()"),
        lengths=driver.execute_script("return window.__lengths"),
        error=driver.execute_script(ANSWER_ERROR),
        stored=driver.execute_async_script(STORED_ANSWER),
    )


@pytest.fixture(scope="module")
def admin(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Account:
    """The first start: the operator opens the UI and creates the admin account (the onboarding page)."""
    with site.start(rendered("dev"), "first") as ui, page_session(tmp_path_factory.mktemp("profile")) as driver:
        driver.get(ui.url)
        button(driver, "Get started").click()
        fill(driver, ADMIN, with_name=True)
        button(driver, "Create Admin Account").click()
        signed_in(driver)
    return ADMIN


class TestSignUpClosed:
    """``openWebuiEnableSignup`` false (the default): after a restart, the sign-in page only signs in."""

    @pytest.fixture(scope="class")
    def ui(self, site: Site, admin: Account) -> Iterator[webui_local.Server]:
        r = rendered("dev")
        assert r.config["eks-neuron-llm:openWebuiEnableSignup"] == "false"
        with site.start(r, "closed") as server:
            yield server

    def test_the_sign_in_page_offers_no_sign_up(self, ui: webui_local.Server, browser: WebDriver) -> None:
        browser.get(ui.url)
        wait(browser).until(ec.url_contains("/auth"))
        visible(browser, "input#email")
        visible(browser, "input#password")
        button(browser, "Sign in")
        assert buttons(browser, "Sign up") == [], "the sign-in page offers sign-up; openWebuiEnableSignup is false"
        assert not browser.find_elements(By.CSS_SELECTOR, "input#name")
        # Not only hidden: the server refuses it.
        assert signup_status(ui.url, Account("Intruder", "intruder@example.com", "pw-0123456789")) == 403

    def test_the_admin_chats_with_the_served_model_and_the_answer_streams(
        self, ui: webui_local.Server, browser: WebDriver, endpoint: Endpoint
    ) -> None:
        sign_in(browser, ui.url, ADMIN)
        dismiss_release_notes(browser)
        choose_model(browser, endpoint.model)
        answer = chat(browser, "Say hello to the cluster.")
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT_DIR / "chat.png"))
        assert answer.error == "", f"Open WebUI shows an error instead of an answer: {answer.error}"
        assert answer.text, "no answer appeared in the page"
        growing = sorted({n for n in answer.lengths if 0 < n < len(answer.text)})
        record("answer", {"characters": len(answer.text), "partial_lengths_seen": len(growing)})
        assert growing, f"the answer appeared at once ({len(answer.text)} characters), not streamed"
        # Open WebUI stored the model's answer for the chat (the page shows it rendered as markdown).
        assert answer.stored and answer.stored.strip(), "Open WebUI stored no answer for the chat"


def test_sign_up_is_open_when_the_config_opens_it(site: Site, admin: Account, browser: WebDriver) -> None:
    r = rendered("dev", openWebuiEnableSignup="true")
    with site.start(r, "open") as ui:
        browser.get(f"{ui.url}/auth")
        button(browser, "Sign up").click()
        fill(browser, Account("New User", "new.user@example.com", secrets.token_urlsafe(12)), with_name=True)
        button(browser, "Create Account").click()
        # DEFAULT_USER_ROLE=pending: the account exists and waits for the admin.
        pending = ("awaiting administrator approval", "Account Activation Pending")
        wait(browser).until(lambda d: any(t in d.find_element(By.TAG_NAME, "body").text for t in pending))
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOT_DIR / "signup-pending.png"))
