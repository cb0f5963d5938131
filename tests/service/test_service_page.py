"""The artists' page (`GET /`) as the server sends it: public, strict CSP, nothing from
elsewhere. What it does in a browser: test_service_browser.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.page import CONTENT_SECURITY_POLICY

FILES = Path(__file__).resolve().parents[2] / "service" / "page_files"
ASSETS = ["/ui/page.js", "/ui/page.css", "/ui/favicon.svg"]
MODULES = ["/ui/api.js", "/ui/png.js"]  # imported by page.js


@pytest.fixture
def keyed(make_app):
    return make_app(api_keys=["generate-key"]).test_client()


def test_the_page_and_its_files_are_served_with_a_strict_policy(client):
    with client.get("/") as page:  # closes the sent file
        assert page.status_code == 200 and page.mimetype == "text/html"
        html = page.get_data(as_text=True)
    for asset in ASSETS:
        assert f'"{asset}"' in html
    script = (FILES / "page.js").read_text()
    for module in MODULES:
        assert f'from "./{module.rpartition("/")[2]}"' in script
    for asset in ASSETS + MODULES:
        with client.get(asset) as resp:
            assert resp.status_code == 200, asset
            if asset.endswith(".js"):  # a module script needs a JavaScript type
                assert resp.mimetype == "text/javascript", asset
            assert resp.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
    policy = dict(
        d.strip().split(" ", 1) for d in page.headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in page.headers["Content-Security-Policy"]
    assert page.headers["Cache-Control"] == "no-cache"


def test_the_page_is_public_but_the_api_is_not(keyed):
    with keyed.get("/") as page:
        assert page.status_code == 200
    with keyed.get("/ui/page.js") as resp:
        assert resp.status_code == 200 and "javascript" in resp.mimetype
    assert keyed.get("/v1/jobs").status_code == 401
    assert keyed.get("/v1/models").status_code == 401
    # The public prefix opens files in the page's folder only.
    for path in ("/ui/../v1/jobs", "/ui/%2e%2e/v1/jobs", "/ui/../page.py", "/ui/"):
        with keyed.get(path) as resp:
            assert resp.status_code in (401, 404), path
            assert "jobs" not in (resp.get_json(silent=True) or {}), path


def test_nothing_is_fetched_from_another_origin():
    """No URL with a host in any attribute, CSS url() or import; no inline script or style,
    which the policy would block."""
    for path in FILES.iterdir():
        text = path.read_text()
        text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), path.name
        assert "@import" not in text and not re.search(r"\burl\(", text), path.name
    html = (FILES / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", html) == ['<script type="module" src="/ui/page.js">']
    assert " style=" not in html and "<style" not in html
    assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers
    for name in ("page.js", "api.js", "png.js"):
        script = (FILES / name).read_text()
        assert "innerHTML" not in script and "eval(" not in script, name


def test_the_page_shows_pixels_unsmoothed():
    css = (FILES / "page.css").read_text()
    rule = re.search(r"img\.pixels\s*\{([^}]*)\}", css)
    assert rule and "image-rendering: pixelated" in rule[1]
