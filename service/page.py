"""`GET /`: the artists' page (prompt, live progress, gallery, history) and its files.

Plain HTML, CSS and one script in `page_files/`, served as they are: no build step, nothing
from another origin. The page and its files are public (`service.auth.PUBLIC_PATHS`), since
a browser sends no key when it loads a page; the script sends the key, which the artist
types once and the browser keeps in its local storage, with every API call it makes.
"""

from __future__ import annotations

from flask import Blueprint, Response

ASSETS_URL = "/ui"

bp = Blueprint("page", __name__, static_folder="page_files", static_url_path=ASSETS_URL)

# Same origin only, no inline script or style, no frames, no plugins; images also from the
# blob: URLs the script makes of the PNGs it fetches with the key. Trusted Types: the
# script builds its DOM from nodes and text, never from HTML strings.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@bp.get("/")
def index() -> Response:
    """The page for artists: prompt, live progress, gallery and history."""
    return bp.send_static_file("index.html")


@bp.after_request
def secure(response: Response) -> Response:
    """The page's security headers, on the page and on each of its files."""
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    # Revalidated on every load (they carry an ETag), so a new page never meets an old script.
    response.headers["Cache-Control"] = "no-cache"
    return response
