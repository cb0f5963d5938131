"""The README's picture of the artists' page: a real job on a running server, in chromium.

Start a server with the bundled model, then drive the page as an artist would (type a
prompt, press Enter, wait for the images) and save a screenshot:

    .venv/bin/pixelscene up --port 8765 --data-dir /tmp/page-shot &
    .venv/bin/python scripts/page_screenshot.py --url http://127.0.0.1:8765 --out docs/page.png

Needs Playwright (the test extra) and Debian's chromium (`apt-get install chromium`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

JOB = {"prompt": "a medieval castle on a hilltop at sunset", "n": "4", "seed": "7"}
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--out", type=Path, default=Path("docs/page.png"))
    parser.add_argument("--zoom", default="2", choices=["1", "2", "3"])
    parser.add_argument("--chromium", default=shutil.which("chromium"))
    args = parser.parse_args()
    if not args.chromium:
        sys.exit("no chromium: apt-get install chromium, or pass --chromium")
    os.environ.pop("LD_PRELOAD", None)  # OpenBLAS, preloaded for MLX, breaks node and chromium
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(300_000)  # the real model on a CPU
        page.goto(args.url)
        page.get_by_label("Zoom").select_option(args.zoom)
        page.get_by_label("Count").fill(JOB["n"])
        page.get_by_label("Seed").fill(JOB["seed"])
        page.get_by_label("Palette").select_option("auto")  # auto:32
        page.get_by_label("Prompt").fill(JOB["prompt"])
        page.get_by_label("Prompt").press("Enter")
        card = page.locator("article.card").first
        card.locator(".badge", has_text="succeeded").wait_for()
        for img in card.locator("img.pixels").all():
            img.scroll_into_view_if_needed()
            page.wait_for_function(
                "i => i.complete && i.naturalWidth > 0", arg=img.element_handle()
            )
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=args.out)
        browser.close()
    print(f"{args.out}: {args.out.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
