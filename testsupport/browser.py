"""What the browser tests share: a tab that records what the page did wrong, signing up and logging in as a person
does, waiting for a condition under the site's Content-Security-Policy, screenshots, and a live server whose only
provider is the provider emulator (each answer exactly the text a test asks for, at the pace it asks for).

Playwright is imported inside the functions: collecting the other tests must not need it."""

import re
from pathlib import Path

SCREENSHOTS = Path(__file__).resolve().parent.parent / "screenshots"  # git-ignored
STEP_MS = 20_000  # one page step: a navigation, an HTMX swap, a first token
VIEWPORT = {"width": 1280, "height": 860}
CHAT_URL = re.compile(r"/chat/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/$")

# Installed before any page script: tells a test when htmx's chat socket is open.
SOCKET_WATCH = """
window.__qnx = window.__qnx || {};
window.__qnx.socketOpen = false;
document.addEventListener("htmx:wsOpen", () => { window.__qnx.socketOpen = true; });
document.addEventListener("htmx:wsClose", () => { window.__qnx.socketOpen = false; });
"""

# The emulator-backed server's one model: the emulator serves it over OpenAI's API.
EMULATOR_MODEL = "gpt-3.5-turbo"


class Tab:
    """A browser tab with everything it did recorded: dialogs (dismissed, unless `dismiss_dialogs` is off for a test
    that answers them itself), requests and uncaught page errors. `init_script` runs before the page's own scripts
    on every page of the context."""

    def __init__(self, context, init_script: str | None = SOCKET_WATCH, step_ms: int = STEP_MS,
                 dismiss_dialogs: bool = True):
        from playwright.sync_api import expect

        expect.set_options(timeout=step_ms)
        context.set_default_timeout(step_ms)
        if init_script:
            context.add_init_script(init_script)
        self.context = context
        self.page = context.new_page()
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.errors: list[str] = []
        if dismiss_dialogs:
            self.page.on("dialog", self._dialog)
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def close(self, check_errors: bool = True):
        errors = list(self.errors)
        self.context.close()
        if check_errors:
            assert errors == [], f"uncaught errors in the page: {errors}"


def open_tab(browser, base_url: str, storage_state=None, init_script: str | None = SOCKET_WATCH,
             step_ms: int = STEP_MS, dismiss_dialogs: bool = True, **options) -> Tab:
    """A tab in a context of its own (its own cookies: `storage_state` logs it in), at desktop size in the light
    theme unless `options` say otherwise, allowed to use the clipboard."""
    settings = {
        "base_url": base_url,
        "viewport": VIEWPORT,
        "color_scheme": "light",
        "permissions": ["clipboard-read", "clipboard-write"],
        **options,
    }
    if storage_state is not None:
        settings["storage_state"] = storage_state
    return Tab(browser.new_context(**settings), init_script, step_ms, dismiss_dialogs)


def wait_for(page, expression: str, arg=None, timeout_ms: int = STEP_MS):
    """Poll a JavaScript expression (or a function of `arg`) until it is truthy. Playwright's wait_for_function
    compiles its predicate in the page with eval, which the site's CSP refuses; page.evaluate goes through the
    DevTools protocol."""
    for _ in range(max(1, timeout_ms // 100)):
        if page.evaluate(expression, arg):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"still false after {timeout_ms} ms: {expression} ({arg!r})")


def wait_for_socket(page, timeout_ms: int = STEP_MS):
    """Until htmx's chat socket is open (needs SOCKET_WATCH)."""
    wait_for(page, "window.__qnx.socketOpen", timeout_ms=timeout_ms)


def sign_up(page, email: str, password: str):
    """From the home page, as a new visitor: sent to log in, follow "Create an account", land on a new chat."""
    from playwright.sync_api import expect

    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    page.get_by_role("link", name="Create an account").click()
    page.fill("input[name=email]", email)
    page.fill("input[name=password1]", password)
    page.fill("input[name=password2]", password)
    page.get_by_role("button", name="Sign up").click()
    expect(page).to_have_url(re.compile(r"/chat/$"))


def log_in(page, email: str, password: str, base_url: str = ""):
    """The login form, then the new chat it leads to. `base_url` for a context made without one."""
    from playwright.sync_api import expect

    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", email)
    page.fill("input[name=password]", password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/chat/$"), timeout=STEP_MS)


def saved_login(browser, base_url: str, email: str, password: str, path: Path) -> str:
    """Log in once and save the session (cookies) to `path`, for contexts opened with storage_state=."""
    tab = open_tab(browser, base_url, init_script=None)
    log_in(tab.page, email, password)
    tab.context.storage_state(path=str(path))
    tab.close()
    return str(path)


def new_chat(page):
    """A new chat, its socket open."""
    from playwright.sync_api import expect

    page.goto("/chat/")
    expect(page.locator("#empty-state")).to_be_visible()
    wait_for_socket(page)


def ask(page, prompt: str):
    """Type a prompt and press Enter, as a person would; returns the new turn once the page shows it."""
    from playwright.sync_api import expect

    wait_for_socket(page)
    turns_before = page.locator("#messages article.turn").count()
    page.fill("#prompt", prompt)
    page.press("#prompt", "Enter")
    expect(page.locator("#messages article.turn")).to_have_count(turns_before + 1)
    turn = page.locator("#messages article.turn").last
    expect(turn.locator(".prompt")).to_have_text(prompt)
    expect(page.locator("#prompt")).to_have_value("")  # the server took it: the box is emptied
    return turn


def wait_until_finished(turn, timeout_ms: int = 60_000):
    """Until the turn's answer has ended and the server's rendering replaced the streamed text."""
    from playwright.sync_api import expect

    expect(turn.locator("button.stop")).to_have_count(0, timeout=timeout_ms)
    expect(turn.locator(".answer > .markdown")).to_have_count(1)


def answer_growth(page, turn, timeout_ms: int = 60_000) -> list[str]:
    """The answer's text after every change until it is rendered: the streaming, as the page showed it."""
    return page.evaluate(
        """([answer, timeout]) => new Promise((resolve) => {
             const seen = [];
             const record = () => {
               const el = document.getElementById(answer);
               if (!el) return;
               if (el.querySelector(".markdown")) { observer.disconnect(); resolve(seen); return; }
               if (seen[seen.length - 1] !== el.textContent) seen.push(el.textContent);
             };
             const observer = new MutationObserver(record);
             const options = {childList: true, subtree: true, characterData: true};
             observer.observe(document.getElementById("messages"), options);
             record();
             setTimeout(() => { observer.disconnect(); resolve(seen); }, timeout);
           })""",
        [turn.locator(".answer").get_attribute("id"), timeout_ms],
    )


def screenshot(page, name: str):
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)


def start_emulator_server(work_dir: Path, emulator_url: str, server: str = "daphne"):
    """A real daphne (testsupport/live.py) whose catalog answers with the emulator's OpenAI API: no local model is
    loaded, no chat naming or fallback calls; file embeddings come from the emulator too (its OpenAI key is set)."""
    from testsupport.live import LiveServer
    from testsupport.scripted import EMULATOR_KEYS

    env = {
        **EMULATOR_KEYS,
        # Every provider with a key points at the emulator: whatever model a test picks, nothing leaves loopback.
        "OPENAI_BASE_URL": f"{emulator_url}/v1",
        "CLAUDE_BASE_URL": emulator_url,
        "GROQ_BASE_URL": emulator_url,
        "GEMINI_BASE_URL": emulator_url,
        "OPENROUTER_BASE_URL": f"{emulator_url}/api/v1",
        "DEFAULT_MODEL": EMULATOR_MODEL,
        "FALLBACK_MODELS": "",
        "UTILITY_MODELS": EMULATOR_MODEL,
        "CHAT_NAMING": "false",
        "LOCAL_MODEL_PRELOAD": "false",
        "LOCAL_MODEL_THREADS": "1",
    }
    return LiveServer(work_dir, extra_env=env, server=server).start()
