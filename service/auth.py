"""Who may do what: bearer tokens or a session cookie, their roles, and cross-site requests.

With `api.tokens` set, every route but the public ones needs a token: in an `Authorization:
Bearer` header (scripts), or in the session cookie the dashboard gets once from POST /api/session
(HttpOnly, SameSite=Strict; the token itself is never stored in the browser). A cookie is the
token's signature of its expiry and role (HMAC keyed by the token), so it needs no server-side
state, works across API processes and restarts, and dies with its token's removal from the
configuration. A `read` token sees everything and changes nothing (403).

Cross-site requests: a state-changing request that does not carry a bearer token (it rides on a
cookie, or no tokens are configured at all) must come from a page of this API's own origin: an
`Origin` header naming another host, or `Sec-Fetch-Site` other than same-origin, is refused (403),
and a cookie-authenticated one must show one of the two. Clients that send neither (curl,
scripts) are not browsers, and have no cookie to abuse. Without tokens, a `Host` that is not one
of the names answered (api.allowed_hosts) is refused too (421): a page whose own name was made to
resolve to 127.0.0.1 (DNS rebinding) sends its own name as Host.

Unknown paths are guarded like the real ones, so without a token they answer 401 and do not tell
which exist.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from asynctask.core.exposure import ANY_HOST, host_name, same_origin
from asynctask.service import keys
from asynctask.service.dashboard_schemas import LoginSchema, SessionSchema, load
from asynctask.service.middlewares import error_response, shown
from asynctask.service.openapi import SESSION_COOKIE, SESSION_PATH, body, is_public, operation
from asynctask.service.tokens import OPEN, READ, SESSION_SECONDS, Identity

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_LOGIN = LoginSchema()


def identify(request: web.Request) -> Identity | None:
    """The request's identity: by bearer token, else by session cookie; None if neither holds.

    A present but wrong Authorization header is None even with a good cookie.
    """
    tokens = request.app[keys.TOKENS]
    if not tokens.required:
        return OPEN
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is not None:
        scheme, _, given = header.partition(" ")
        # aiohttp decodes header bytes that are not UTF-8 as lone surrogates; surrogateescape
        # turns them back into those bytes (a plain encode() raised: a 500 instead of a 401).
        role = tokens.role_of(given.encode("utf-8", "surrogateescape"))
        return Identity(role, "bearer") if role and scheme.lower() == "bearer" else None
    cookie = request.cookies.get(SESSION_COOKIE)
    return tokens.session(cookie) if cookie else None


def cross_site(request: web.Request, identity: Identity | None) -> str | None:
    """Why a state-changing request is refused as cross-site, or None if it may go on."""
    if request.method in SAFE_METHODS or (identity is not None and identity.via == "bearer"):
        return None
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None:
        if not same_origin(origin, request.headers.get(hdrs.HOST, "")):
            return f"Cross-site request refused (Origin {shown(origin)!r} is not this API's)."
        return None
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Cross-site request refused (Sec-Fetch-Site: {site})."
    if site is None and identity is not None and identity.via == "cookie":
        return "A request with the session cookie must send its Origin (use the dashboard)."
    return None


def foreign_host(request: web.Request) -> str | None:
    """The Host's name if it is not one answered without a token, else None."""
    allowed = request.app[keys.HOSTS]
    header = request.headers.get(hdrs.HOST)
    # No Host at all is an HTTP/1.0 client, never a browser; "*" turns the check off.
    if header is None or ANY_HOST in allowed:
        return None
    name = host_name(header)
    return None if name in allowed else name


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tokens (bearer or session cookie), roles, the Host and cross-site checks, before any
    handler."""
    api = request.app[keys.CONFIG].api
    public = is_public(request.path, api.public_metrics) or request.path == SESSION_PATH
    if not api.tokens and not public and (host := foreign_host(request)) is not None:
        return error_response(
            421, f"Host {shown(host)!r} is not answered without a token (api.allowed_hosts)."
        )
    identity = identify(request)
    refused = cross_site(request, identity)
    if refused is not None:
        return error_response(403, refused)
    if identity is None and not public:
        return error_response(
            401, "Missing or wrong bearer token.", headers={"WWW-Authenticate": "Bearer"}
        )
    changes = request.method not in SAFE_METHODS and not public
    if changes and identity is not None and identity.role == READ:
        return error_response(403, "This token may only read: it cannot change anything.")
    if identity is not None:
        request[keys.IDENTITY] = identity
    return await handler(request)


def _session(request: web.Request, identity: Identity | None) -> web.Response:
    expires = None
    if identity is not None and identity.expires is not None:
        expires = datetime.fromtimestamp(identity.expires, UTC).isoformat()
    return web.json_response(
        {
            "auth_required": request.app[keys.TOKENS].required,
            "role": None if identity is None else identity.role,
            "via": None if identity is None else identity.via,
            "expires_at": expires,
        }
    )


@operation("Who you are: whether tokens are required, your role, your session's end",
           (200, SessionSchema, "role null: not logged in."), (), tags=("session",))  # fmt: skip
async def get_session(request: web.Request) -> web.Response:
    """GET /api/session: always 200, so a page can tell whether to show its login form."""
    return _session(request, request.get(keys.IDENTITY))


@operation("Log in: exchange a token for an HttpOnly, SameSite=Strict session cookie",
           (200, SessionSchema, "Logged in; the cookie is set."),
           (400, 401, 403, 408, 413, 415, 422),
           tags=("session",))  # fmt: skip
@body(LoginSchema)
async def login(request: web.Request) -> web.Response:
    """POST /api/session: 401 for a wrong token; without configured tokens, nothing to do."""
    given = await request.app[keys.BODIES].load(request, lambda body: load(_LOGIN, body))
    token: str = given["token"]
    tokens = request.app[keys.TOKENS]
    if not tokens.required:
        return _session(request, OPEN)
    issued = tokens.issue(token.encode("utf-8", "surrogateescape"))
    if issued is None:
        return error_response(401, "Wrong token.")
    value, identity = issued
    response = _session(request, identity)
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


@operation("Log out: drop the session cookie", (200, SessionSchema, "Logged out."), (403,),
           tags=("session",))  # fmt: skip
async def logout(request: web.Request) -> web.Response:
    """DELETE /api/session."""
    response = _session(request, None if request.app[keys.TOKENS].required else OPEN)
    response.del_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
    return response
