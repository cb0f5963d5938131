"""The artists' page in a real browser: Debian's chromium driven by Playwright, against a real
`pixelscene serve`, redis-server and `pixelscene worker` (with the fast fake pipeline).

Playwright's own browser download does not work everywhere, so the tests launch the system
chromium (`PIXELSCENE_CHROMIUM`, else `chromium` on PATH) and skip, saying why, without it.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from service_fakes import wait_for

pytestmark = pytest.mark.integration

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright is not installed (pip install -e '.[test]')"
)
CHROMIUM = os.environ.get("PIXELSCENE_CHROMIUM") or next(
    filter(None, (shutil.which(name) for name in ("chromium", "chromium-browser"))), None
)
if CHROMIUM is None:
    pytest.skip(
        "no chromium to drive: install Debian's (apt-get install chromium; .ci/run does so as "
        "root) or set PIXELSCENE_CHROMIUM",
        allow_module_level=True,
    )

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000  # for any one thing the page should do
KEY = "artist-key"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium for the module; Playwright gives each launch a fresh profile."""
    # `make test` preloads OpenBLAS for MLX; in Playwright's driver (node) and in chromium it
    # makes thread creation fail, so they start without it.
    preload = os.environ.pop("LD_PRELOAD", None)
    try:
        playwright = sync_api.sync_playwright().start()
    finally:
        if preload is not None:
            os.environ["LD_PRELOAD"] = preload
    try:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
    finally:
        playwright.stop()


@pytest.fixture
def page_at(browser: Any) -> Iterator[Callable[..., Any]]:
    """Open the page of a server in a fresh browser context (1280x800, own local storage)."""
    contexts = []

    def open_page(base_url: str) -> Any:
        context = browser.new_context(
            viewport={"width": 1280, "height": 800}, base_url=base_url, accept_downloads=True
        )
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base_url)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # A script error or a refusal by the policy; not the 4xx answers the tests ask for.
        page.on(
            "console",
            lambda m: (
                errors.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource")
                else None
            ),
        )
        page.js_errors = errors
        page.goto("/")
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def serve(redis_server: Any, real_redis: Any, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start `pixelscene serve` on a free port with extra environment; returns its URL."""
    from workers.redis_server import free_port

    procs = []

    def start(**env: str) -> str:
        port = free_port()
        cmd = [sys.executable, "-m", "pixelscene", "serve", "--port", str(port)]
        cmd += ["--redis", redis_server.url, "--objects-dir", str(tmp_path / "objects")]
        log = (tmp_path / f"serve-{port}.log").open("wb")
        proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        procs.append((proc, log))
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, (tmp_path / f"serve-{port}.log").read_text()
            try:
                with urllib.request.urlopen(url + "/v1/health", timeout=1) as resp:
                    return resp.status == 200
            except OSError:
                return False

        wait_for(up, 60, 0.1)
        return url

    yield start
    for proc, log in procs:
        proc.terminate()
        proc.wait(10)
        log.close()


def call(url: str, body: Any = None, method: str = "POST") -> Any:
    """A JSON call to the API, as a script would make it (localhost: no key)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data else {}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read()


def set_hidden(page: Any, hidden: bool) -> None:
    """Make the page believe its tab is hidden (or shown again), as a switch of tabs does."""
    page.evaluate(
        """hidden => {
            Object.defineProperty(document, "hidden", {configurable: true, get: () => hidden});
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


def card(page: Any, prompt: str) -> Any:
    return page.locator("article.card", has=page.get_by_text(prompt, exact=True))


def saved(download: Any) -> bytes:
    return Path(download.path()).read_bytes()


def test_prompt_progress_gallery_downloads_cancel_history(serve, fake_farm, page_at, real_redis):
    url = serve()
    # Twelve earlier jobs, canceled. The history comes ten at a time.
    for i in range(12):
        job = call(f"{url}/v1/generations", {"prompt": f"an earlier job {i}"})
        call(f"{url}/v1/jobs/{job['id']}", method="DELETE")
    page = page_at(url)
    card(page, "an earlier job 2").wait_for()
    assert page.locator("article.card").count() == 10
    page.get_by_role("button", name="Older jobs").click()
    card(page, "an earlier job 0").locator(".badge", has_text="canceled").wait_for()
    assert page.locator("article.card").count() == 12
    assert page.get_by_role("button", name="Older jobs").is_hidden()
    sync_api.expect(page.locator("#model option")).to_have_text(["tiny"])

    # The API's own message, next to the field it names.
    prompt = page.get_by_label("Prompt")
    prompt.fill("a castle on a hill at sunset")
    page.get_by_label("Count").fill("17")
    prompt.press("Enter")
    page.locator("#err-n").get_by_text("must be <= 16").wait_for()
    assert page.get_by_label("Count").get_attribute("aria-invalid") == "true"
    assert "the request has invalid fields" in page.locator("#form-status").inner_text()
    assert page.locator("article.card").count() == 12

    # No worker yet: each job shows its place in the queue at once.
    page.get_by_label("Count").fill("4")
    page.get_by_label("Seed").fill("7")
    page.get_by_label("Palette").select_option("auto")
    page.get_by_label("Colours for auto:N").fill("16")
    prompt.press("Enter")
    castle = card(page, "a castle on a hill at sunset")
    castle.get_by_text("next in the queue").wait_for()
    assert castle.get_attribute("data-position") == "0"
    assert page.locator("#err-n").inner_text() == ""
    prompt.fill("a moor at dusk")
    prompt.press("Enter")
    moor = card(page, "a moor at dusk")
    moor.get_by_text("1 ahead in the queue").wait_for()

    # Cancel from the keyboard.
    moor.get_by_role("button", name="Cancel").focus()
    page.keyboard.press("Enter")
    moor.locator(".badge", has_text="canceled").wait_for()

    # Polls: twice a second in sight (5 or 6 in 3 s), ten times less often in a hidden tab,
    # and at once on coming back.
    job_id = castle.get_attribute("data-job")
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if r.url.endswith(job_id) else None)
    page.wait_for_timeout(3000)
    seen, polls[:] = len(polls), []
    set_hidden(page, True)
    page.wait_for_timeout(3000)
    assert seen >= 3 and len(polls) <= 2, (seen, polls)
    with page.expect_request(lambda r: r.url.endswith(job_id), timeout=1000):
        set_hidden(page, False)

    # A worker starts: the bar moves, then the images come, 2x, never smoothed.
    fake_farm.env["FAKE_STEP_SECONDS"] = "0.25"  # 16 steps for 4 images: about 4 s
    fake_farm.spawn("w-page", queues="generate")
    bar = castle.locator("progress.bar")
    bar.wait_for()
    first = wait_for(lambda: float(bar.get_attribute("value") or 0) or None, 20)
    assert first < 1
    page.wait_for_function(
        "([bar, first]) => !bar.hidden && Number(bar.value) > first && Number(bar.value) < 1",
        arg=[bar.element_handle(), first],
    )
    castle.locator(".badge", has_text="succeeded").wait_for()
    images = castle.locator("img.pixels")
    images.nth(3).wait_for()
    assert images.count() == 4
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=images.nth(0).element_handle()
    )
    shown = images.nth(0).evaluate(
        """img => ({natural: [img.naturalWidth, img.naturalHeight],
                   shown: [img.getBoundingClientRect().width, img.getBoundingClientRect().height],
                   rendering: getComputedStyle(img).imageRendering})"""
    )
    assert shown == {"natural": [320, 200], "shown": [640, 400], "rendering": "pixelated"}
    page.get_by_label("Zoom").select_option("3")
    assert images.nth(0).evaluate("img => img.getBoundingClientRect().width") == 960
    page.get_by_label("Zoom").select_option("2")

    # Downloads: the server's indexed PNG (auto:16), an RGB one with the same pixels and
    # metadata, and the code grid.
    server_png = fetch(f"{url}/v1/jobs/{job_id}/images/0.png")
    shot = castle.locator("figure.shot").nth(0)
    with page.expect_download() as info:
        shot.get_by_role("button", name="Indexed").click()
    assert saved(info.value) == server_png
    with page.expect_download() as info:
        shot.get_by_role("button", name="PNG", exact=True).click()
    rgb, server = (Image.open(io.BytesIO(data)) for data in (saved(info.value), server_png))
    assert server.mode == "P" and len(server.getcolors()) <= 16
    assert rgb.mode == "RGB" and rgb.size == (320, 200)
    assert rgb.tobytes() == server.convert("RGB").tobytes()
    assert rgb.text["seed"] == "7" and rgb.text["prompt"] == "a castle on a hill at sunset"
    assert info.value.suggested_filename == "a-castle-on-a-hill-at-sunset-7.png"
    with page.expect_download() as info:
        shot.get_by_role("button", name="Codes").click()
    codes = json.loads(saved(info.value))
    assert codes["seed"] == 7 and codes["rows"] == 13 and codes["cols"] == 20

    # The curl command of the second image queues that image again, pixel for pixel.
    second = castle.locator("figure.shot").nth(1)
    second.get_by_role("button", name="Copy curl").click()
    second.get_by_text("curl command copied").wait_for()
    command = page.evaluate("navigator.clipboard.readText()")
    assert command == second.locator("code.curl").inner_text()
    words = shlex.split(command)
    body = json.loads(words[words.index("-d") + 1])
    assert words[:4] == ["curl", "-s", "-X", "POST"] and words[4] == f"{url}/v1/generations"
    assert body["seed"] == 8 and body["n"] == 1 and body["palette"] == "auto:16"
    again = call(words[4], body)["id"]
    wait_for(lambda: call(f"{url}/v1/jobs/{again}", method="GET")["status"] == "succeeded", 30)
    assert fetch(f"{url}/v1/jobs/{again}/images/0.png") == fetch(
        f"{url}/v1/jobs/{job_id}/images/1.png"
    )

    # "Reuse seed" puts the image's seed and settings back in the form.
    second.get_by_role("button", name="Reuse seed").click()
    assert page.get_by_label("Seed").input_value() == "8"
    assert page.get_by_label("Prompt").input_value() == "a castle on a hill at sunset"
    assert page.evaluate("document.activeElement.id") == "prompt"

    # A reload finds the history: the curl's job, the canceled moor, the castle with images.
    page.reload()
    castle = card(page, "a castle on a hill at sunset").last
    castle.locator("img.pixels").nth(3).wait_for()
    card(page, "a moor at dusk").locator(".badge", has_text="canceled").wait_for()
    assert page.locator("article.card").count() == 10
    assert page.locator("article.card").first.get_attribute("data-job") == again
    assert page.get_by_role("button", name="Older jobs").is_visible()

    # Readable at 1280x800 and on a 390-px-wide phone: nothing wider than the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    width = castle.locator("img.pixels").nth(0).evaluate("i => i.getBoundingClientRect().width")
    assert 300 <= width <= 390
    assert page.js_errors == []


def test_with_api_keys_the_key_is_asked_for_kept_and_a_429_says_when(serve, page_at):
    url = serve(
        PIXELSCENE_API_KEYS=KEY,
        PIXELSCENE_ADMIN_KEYS="admin-key",
        PIXELSCENE_RATE_LIMIT_GENERATE="1/min burst 8",
        PIXELSCENE_PALETTES="c64=/srv/palettes/c64.gpl",
    )
    page = page_at(url)
    # Without a key: the API's 401, shown beside the key field.
    page.locator("#err-key").get_by_text("missing or invalid API key").wait_for()
    page.get_by_label("Generate key, kept in this browser").fill(KEY)
    page.get_by_label("Generate key, kept in this browser").press("Enter")
    page.get_by_text("No jobs yet").wait_for()
    sync_api.expect(page.locator("#model option")).to_have_text(["tiny"])
    # The server's named palettes, from the request schema it validates with.
    sync_api.expect(page.locator("#palette option")).to_have_text(["none", "vga", "auto:N", "c64"])
    prompt = page.get_by_label("Prompt")
    prompt.fill("a harbour in the fog")
    prompt.press("Enter")
    card(page, "a harbour in the fog").get_by_text("next in the queue").wait_for()

    page.reload()  # the key stays in the browser, and the job in the history
    assert page.get_by_label("Generate key, kept in this browser").input_value() == KEY
    harbour = card(page, "a harbour in the fog")
    harbour.locator(".badge", has_text="queued").wait_for()

    # Polling spends the key's tokens: the card says so, and a new job gets a 429 that
    # says when to retry.
    harbour.locator(".card-error", has_text=re.compile("too many requests")).wait_for()
    prompt.fill("a harbour at noon")
    prompt.press("Enter")
    status = page.locator("#form-status")
    status.get_by_text(re.compile(r"too many requests .* Retry in \d+ s\.")).wait_for()
    assert page.locator("article.card").count() == 1
    assert page.js_errors == []
