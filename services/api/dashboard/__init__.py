"""The operator dashboard (issue 13): a single-page web app served by the HTTP API process at ``/dashboard/``.

It is static files only (``static/``: HTML, one stylesheet, ES modules, hand-made SVG charts; no build step, no
third-party code, nothing fetched from elsewhere) and uses only the public HTTP API, with the operator's API key
kept in the tab's ``sessionStorage`` and sent as ``Authorization: Bearer``. The files hold no secret, so they are
served without a key (like the OpenAPI document); ``API_DASHBOARD=false`` turns them off.

Every answer carries a strict Content-Security-Policy (scripts, styles and connections to this origin only, no
inline script, no framing) and ``Referrer-Policy: no-referrer``; the app writes data into the page as text, never
as markup. Decisions: docs/adr/dashboard.md. Tests: tests/e2e/test_dashboard.py (Chromium through playwright-core).
"""
from services.api.dashboard.routes import router

__all__ = ["router"]
