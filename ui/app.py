"""Assembles the dashboard (pages, API, static files, the security guard) and serves it.

Starlette on uvicorn: a small ASGI toolkit and its reference server, both widely used and
maintained (FastAPI is built on them). plotly.js is served from the ``plotly`` Python
package's bundled ``plotly.min.js``: installed with gradq, nothing fetched at run time.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import webbrowser
from collections.abc import Iterable
from pathlib import Path

from gradq.service.settings import get_settings, redact
from gradq.service.store import queries
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import api, pages, workers
from .security import LOCAL_NAMES, Guard, allowed_hosts

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("gradq.ui")


def plotly_js() -> Path:
    """The plotly package's bundled plotly.min.js (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the plotly package is missing: pip install plotly")
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: reinstall plotly")
    return path


def _plotly(_: Request) -> Response:
    return FileResponse(plotly_js(), media_type="text/javascript",
                        headers={"cache-control": "public, max-age=86400"})


def create_app(host: str = "127.0.0.1", allow: Iterable[str] = ()) -> Starlette:
    """The ASGI app; requests must name ``host``, a loopback name or one of ``allow``."""
    routes = [*pages.ROUTES, *api.ROUTES, *workers.ROUTES,
              Route("/static/plotly.min.js", _plotly),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    return Starlette(routes=routes, middleware=[
        Middleware(Guard, hosts=allowed_hosts(host, allow)),
        Middleware(GZipMiddleware, minimum_size=1024)])


def serve(host: str = "127.0.0.1", port: int = 8765, allow: Iterable[str] = (),
          open_browser: bool = False) -> None:
    """Run the dashboard until interrupted (``gradq ui``)."""
    import uvicorn

    queries.count_jobs()  # the database answers (and is migrated) before we listen
    plotly_js()
    if host not in LOCAL_NAMES:
        print(f"warning: gradq ui is bound to {host}, not 127.0.0.1: anyone who can reach "
              "this address can read every job (there is no login)", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/"
    print(f"gradq ui: {url} over {redact(get_settings().database_url)} (Ctrl-C stops)",
          file=sys.stderr)
    if open_browser:
        threading.Timer(1.0, webbrowser.open, (url,)).start()
    uvicorn.run(create_app(host, allow), host=host, port=port, log_level="warning",
                server_header=False, proxy_headers=False)
