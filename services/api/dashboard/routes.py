"""The dashboard's files: ``/dashboard/`` (the app) and ``/dashboard/<file>`` for the files in ``static/`` (a fixed
list read at import: no path from a request ever reaches the file system). ``/`` and ``/dashboard`` redirect
to ``/dashboard/``."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from services.api.auth import Problem

STATIC = Path(__file__).resolve().parent / "static"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
# the page may load its own scripts and styles and talk to this origin (the API); nothing inline, no frames
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}

FILES: dict[str, tuple[bytes, str]] = {
    path.name: (path.read_bytes(), TYPES[path.suffix])
    for path in sorted(STATIC.iterdir()) if path.is_file() and path.suffix in TYPES
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/dashboard/", status_code=302)


@router.get("/dashboard")
async def dashboard_root() -> RedirectResponse:
    return RedirectResponse("/dashboard/", status_code=302)


@router.get("/dashboard/")
async def index() -> Response:
    return _file("index.html")


@router.get("/dashboard/{name}")
async def asset(name: str) -> Response:
    return _file(name)


def _file(name: str) -> Response:
    found = FILES.get(name)
    if found is None:
        raise Problem(404, f"no such dashboard file: {name[:100]}")
    body, media_type = found
    return Response(body, media_type=media_type, headers=HEADERS)
