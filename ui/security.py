"""What every response of the dashboard carries, and what every request must satisfy.

Read-only and local by design: GET and HEAD only (405 otherwise), the Host header must name
this server (a page on another site that rebinds its DNS name to 127.0.0.1 is refused), no
CORS headers, and a Content-Security-Policy that allows scripts from this server only, so
a string a user wrote can never run even if escaping were missed somewhere.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'self'; script-src 'self'; "
       # plotly.js sets style attributes and injects its own stylesheet
       "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
HEADERS = [(b"content-security-policy", CSP.encode()),
           (b"x-content-type-options", b"nosniff"),
           (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"no-referrer"),
           (b"cross-origin-opener-policy", b"same-origin"),
           (b"cross-origin-resource-policy", b"same-origin")]
LOCAL_NAMES = ("127.0.0.1", "localhost", "::1")


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> set[str]:
    """Host names a request may carry: the loopback names, the bound address (unless it is a
    wildcard) and any the user added with ``--allow-host``."""
    names = {*LOCAL_NAMES, *(h.lower() for h in extra)}
    if bound not in ("0.0.0.0", "::", ""):
        names.add(bound.lower())
    return names


def host_name(header: str) -> str:
    """The name part of a Host header: ``[::1]:8765`` → ``::1``, ``a:80`` → ``a``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """ASGI middleware: refuse other methods and foreign hosts, add the security headers."""

    def __init__(self, app: ASGIApp, hosts: set[str]) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        if scope["method"] not in ("GET", "HEAD"):
            await _plain(send, 405, "method not allowed: this dashboard is read-only\n",
                         [(b"allow", b"GET, HEAD")])
        elif host_name(host) not in self.hosts:
            await _plain(send, 400, "invalid Host header: start `gradq ui` with "
                                    "--allow-host NAME to serve that name\n")
        else:
            async def send_with_headers(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", []), *HEADERS]
                await send(message)

            await self.app(scope, receive, send_with_headers)


async def _plain(send: Send, status: int, text: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            *(headers or []), *HEADERS]})
    await send({"type": "http.response.body", "body": body})
