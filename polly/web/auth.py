"""Sign in with Discord (OAuth2 authorization code, scopes ``identify guilds``, through Authlib's
Starlette client), the session, CSRF tokens, and sign-out.

The session is Starlette's signed cookie (itsdangerous, keyed by ``SECRET_KEY``): ``HttpOnly``,
``SameSite=Lax``, ``Secure`` when the redirect URI is https, expiring after
``web.session_max_age_seconds``; a forged or expired cookie is simply no session. It carries the
member's id and name, a random session id and the CSRF token, never the Discord access token: that
is kept by :class:`~polly.web.sessions.SessionTokens` (encrypted in Redis, so sessions survive a
restart; in the process alone without Redis). The token of a request's session is looked up once,
before its handler runs (:meth:`SignIn.resolve`).

Every state-changing request is a POST carrying the session's CSRF token (form field
``csrf_token`` or header ``X-CSRF-Token``); :func:`checked_form` refuses it otherwise.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import warnings
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from polly.config import WebSettings
from polly.web.access import Member
from polly.web.discord_api import DiscordApi, DiscordApiError
from polly.web.sessions import SessionTokens

with warnings.catch_warnings():
    # Authlib 1.9 announces a future move of its httpx integration (today's is the documented one);
    # its own "always" filter is installed first, so the narrower ignore below takes precedence.
    import authlib.deprecate  # noqa: F401

    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.starlette_client import OAuth, OAuthError

logger = logging.getLogger("polly.web")
SCOPES = "identify guilds"
FORM_ALLOWANCE_BYTES = 1024 * 1024  # the form's other fields, beside one image


class SignIn:
    """The OAuth2 client and the tokens of signed-in sessions."""

    def __init__(self, settings: WebSettings, api: DiscordApi, redis: Any = None) -> None:
        assert settings.client_id is not None
        assert settings.client_secret is not None
        self.settings = settings
        self.api = api
        self._oauth = OAuth()
        self._oauth.register(
            "discord",
            client_id=settings.client_id,
            client_secret=settings.client_secret.get_secret_value(),
            authorize_url=settings.oauth_authorize_url,
            access_token_url=f"{api.api_base}/oauth2/token",
            api_base_url=f"{api.api_base}/",
            client_kwargs={"scope": SCOPES, "token_endpoint_auth_method": "client_secret_post"},
        )
        self.client: Any = self._oauth.create_client("discord")
        assert settings.secret_key is not None
        self.tokens = SessionTokens(
            settings.secret_key.get_secret_value(), settings.session_max_age_seconds, redis
        )

    async def login(self, request: Request) -> Response:
        response: Response = await self.client.authorize_redirect(request, self.settings.redirect_uri)
        return response

    async def callback(self, request: Request) -> tuple[Member, str | None]:
        """Exchange the code; the member and their avatar hash. Raises :class:`SignInError`."""
        if "error" in request.query_params:
            msg = f"Discord did not sign you in ({request.query_params['error'][:100]})"
            raise SignInError(msg)
        try:
            token = await self.client.authorize_access_token(request)
        except OAuthError as err:
            msg = f"sign-in failed ({err.error}); start again"
            raise SignInError(msg) from None
        except Exception as err:  # noqa: BLE001 - the token endpoint's transport errors, without secrets
            msg = f"sign-in failed: Discord could not be reached ({type(err).__name__})"
            raise SignInError(msg) from None
        access = str(token["access_token"])
        try:
            resp = await self.client.get("users/@me", token=token)
        except Exception as err:  # noqa: BLE001 - transport errors of the identity call
            msg = f"sign-in failed: Discord could not be reached ({type(err).__name__})"
            raise SignInError(msg) from None
        if resp.status_code != 200:
            msg = f"sign-in failed: Discord answered {resp.status_code} for your profile"
            raise SignInError(msg)
        me = resp.json()
        name = str(me.get("global_name") or me.get("username") or me["id"])
        member = Member(str(me["id"]), name, access)
        sid = secrets.token_urlsafe(24)
        await self.tokens.put(sid, access)
        request.session.clear()
        request.session.update(
            {"uid": member.id, "name": name, "sid": sid, "csrf": secrets.token_urlsafe(32)}
        )
        return member, me.get("avatar")

    async def resolve(self, request: Request) -> None:
        """Look up the session's token once per request, for :meth:`member`."""
        request.state.polly_member = None
        session = request.session
        sid, uid = session.get("sid"), session.get("uid")
        if not isinstance(sid, str) or not isinstance(uid, str):
            return
        token = await self.tokens.get(sid)
        if token is not None:
            request.state.polly_member = Member(uid, str(session.get("name", uid)), token)

    def member(self, request: Request) -> Member | None:
        """The signed-in member of this request, ``None`` without a (valid, live) session."""
        member = getattr(request.state, "polly_member", None)
        return member if isinstance(member, Member) else None

    async def logout(self, request: Request) -> None:
        sid = request.session.get("sid")
        if isinstance(sid, str):
            await self.tokens.drop(sid)
        request.state.polly_member = None
        request.session.clear()


class SignInError(Exception):
    """Sign-in did not complete; the message is safe to show."""


def csrf_token(request: Request) -> str:
    """The session's CSRF token (created on first use)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


async def checked_form(request: Request) -> FormData:
    """The POST's form after its CSRF token matched the session's; 403 otherwise.

    A body without ``Content-Length``, or longer than the upload limit plus 1 MiB of fields, is
    refused (411/413) before anything is read: multipart files are spooled to disk as they arrive.
    """
    limit = request.app.state.web.settings.web.upload_max_bytes + FORM_ALLOWANCE_BYTES
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        raise HTTPException(411, "the request must say its length (Content-Length)")
    if int(length) > limit:
        raise HTTPException(
            413, f"the request is larger than {limit:,} bytes; images may be {limit - FORM_ALLOWANCE_BYTES:,}"
        )
    form = await request.form(max_files=1, max_fields=100)
    sent = request.headers.get("X-CSRF-Token") or form.get("csrf_token")
    expected = request.session.get("csrf")
    if not isinstance(sent, str) or not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
        await form.close()
        raise HTTPException(
            403, "the form's security token is missing or stale: reload the page and try again"
        )
    return form


def require_member(signin: SignIn, request: Request) -> Member:
    """The member, or a redirect to sign-in (pages) / 401 (fragments and POSTs)."""
    member = signin.member(request)
    if member is None:
        if request.method == "GET" and "HX-Request" not in request.headers:
            raise HTTPException(303, headers={"Location": "/"})
        raise HTTPException(401, "not signed in (or the session expired): sign in again")
    return member


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def discord_failure(err: DiscordApiError) -> HTTPException:
    """A Discord failure as a page: 502, or 401 when the member's token was refused."""
    if err.status == 401:
        return HTTPException(401, "Discord refused your sign-in (it may have expired): sign in again")
    logger.warning("dashboard: %s", err)
    return HTTPException(502, str(err))
