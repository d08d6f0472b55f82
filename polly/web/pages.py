"""The dashboard's poll pages and actions: list, create, import, show (with live results), close,
reopen, delete and export. Each one checks the member's right to the poll's guild first.

Creating and importing validate with :func:`polly.polls.definition.validate_poll`, the rules and
messages of ``polly poll create``, plus what only the dashboard knows: the channel and the custom
emojis must be the guild's own. Every problem is listed at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from polly.clock import utcnow_naive
from polly.errors import PollNotFoundError, PollStateError, PollValidationError
from polly.polls import reports, service
from polly.polls.definition import DEFAULT_TIMEZONE, MAX_FILE_BYTES, format_local, validate_poll
from polly.web.auth import checked_form, redirect, require_member
from polly.web.discord_api import DiscordApiError, GuildDetails
from polly.web.forms import MAX_OPTIONS, UploadError, form_from_poll, poll_data, store_image
from polly.web.store import (
    STATUSES,
    Preferences,
    create_poll,
    list_page,
    poll_server,
    preferences,
    remember,
    update_scheduled_poll,
)

if TYPE_CHECKING:
    from polly.web.app import WebState

#: Time zones offered first in the form (any IANA name may be typed).
COMMON_ZONES = (
    "US/Eastern",
    "US/Central",
    "US/Mountain",
    "US/Pacific",
    "UTC",
    "Europe/London",
    "Europe/Berlin",
)


def routes() -> list[Route]:
    return [
        Route("/servers/{guild_id:int}/polls", poll_list),
        Route("/servers/{guild_id:int}/polls/new", new_poll, methods=["GET", "POST"]),
        Route("/servers/{guild_id:int}/import", import_polls, methods=["GET", "POST"]),
        Route("/polls/{poll_id:int}", show),
        Route("/polls/{poll_id:int}/results", results_fragment),
        Route("/polls/{poll_id:int}/edit", edit_poll, methods=["GET", "POST"]),
        Route("/polls/{poll_id:int}/close", close, methods=["POST"]),
        Route("/polls/{poll_id:int}/reopen", reopen, methods=["POST"]),
        Route("/polls/{poll_id:int}/delete", delete, methods=["GET", "POST"]),
        Route("/polls/{poll_id:int}/export", export),
    ]


def _web(request: Request) -> WebState:
    from polly.web.app import state_of

    return state_of(request)


async def _details(web: WebState, guild_id: str) -> GuildDetails:
    try:
        return await web.api.guild_details(guild_id)
    except DiscordApiError as err:
        from polly.web.auth import discord_failure

        raise discord_failure(err) from None


async def _poll_guild(request: Request) -> tuple[WebState, int, str]:
    """The poll id and its guild, after the member's right to that guild is checked (404/403)."""
    web = _web(request)
    require_member(web.signin, request)
    poll_id = int(request.path_params["poll_id"])
    server_id = await run_in_threadpool(poll_server, web.database, poll_id)
    if server_id is None:
        raise HTTPException(404, f"there is no poll {poll_id}")
    await web.member_guild(request, server_id)
    return web, poll_id, server_id


# --- list ---------------------------------------------------------------------------------------


async def poll_list(request: Request) -> Response:
    web = _web(request)
    guild_id = str(request.path_params["guild_id"])
    _, guild = await web.member_guild(request, guild_id)
    status = request.query_params.get("status", "active")
    status = status if status in (*STATUSES, "all") else "active"
    search = request.query_params.get("q", "")
    raw_page = request.query_params.get("page", "1")
    page_no = int(raw_page) if raw_page.isdigit() and len(raw_page) < 7 else 1
    page = await run_in_threadpool(
        list_page,
        web.database,
        server_id=guild_id,
        status=None if status == "all" else status,
        search=search,
        page=page_no,
    )
    return web.render(
        request,
        "polls.html",
        {
            "guild": guild,
            "page": page,
            "status": status,
            "q": search,
            "statuses": (*STATUSES, "all"),
            "local": format_local,
        },
    )


# --- create and import ----------------------------------------------------------------------------


async def new_poll(request: Request) -> Response:
    web = _web(request)
    guild_id = str(request.path_params["guild_id"])
    member, guild = await web.member_guild(request, guild_id)
    details = await _details(web, guild_id)
    prefs = await run_in_threadpool(preferences, web.database, member.id)
    context: dict[str, Any] = {
        "guild": guild,
        "details": details,
        "zones": COMMON_ZONES,
        "max_options": MAX_OPTIONS,
        "problems": [],
        "form": {},
        "prefs": prefs,
    }
    if request.method == "GET":
        return web.render(request, "poll_form.html", context)
    form = await checked_form(request)
    try:
        return await _create(request, web, form, context)
    finally:
        await form.close()


async def edit_poll(request: Request) -> Response:
    """Edit a poll that has not opened yet (``scheduled`` and never posted), every field as on create."""
    web, poll_id, server_id = await _poll_guild(request)
    member, guild = await web.member_guild(request, server_id)
    details = await _details(web, server_id)
    prefs = await run_in_threadpool(preferences, web.database, member.id)
    exported = await run_in_threadpool(lambda: reports.export_poll(web.database, poll_id, now=utcnow_naive()))
    status = await run_in_threadpool(lambda: reports.show_poll(web.database, poll_id).poll.status)
    if status != "scheduled":
        raise HTTPException(409, f"poll {poll_id} is {status}: only a poll that has not opened can be edited")
    context: dict[str, Any] = {
        "guild": guild,
        "details": details,
        "zones": COMMON_ZONES,
        "max_options": MAX_OPTIONS,
        "problems": [],
        "form": form_from_poll(exported),
        "prefs": prefs,
        "editing": poll_id,
    }
    if request.method == "GET":
        return web.render(request, "poll_form.html", context)
    form = await checked_form(request)
    try:
        return await _create(request, web, form, context, poll_id=poll_id)
    finally:
        await form.close()


async def _create(
    request: Request, web: WebState, form: FormData, context: dict[str, Any], *, poll_id: int | None = None
) -> Response:
    member, guild, details = require_member(web.signin, request), context["guild"], context["details"]
    guild_id = guild.id
    data = poll_data(form, guild_id)
    definition, problems = validate_poll(data, "poll", now=utcnow_naive())
    problems += _guild_problems(data, details)
    image_path = None
    if not problems:
        try:
            image_path = await store_image(
                form.get("image"), Path(web.settings.engine.image_root), web.settings.web.upload_max_bytes
            )
        except UploadError as err:
            problems.append(str(err))
    if problems or definition is None:
        context.update(problems=problems, form=dict(form))
        return web.render(request, "poll_form.html", context, status=400)
    channels, roles = dict(details.channels), dict(details.roles)
    if poll_id is not None:
        editing = poll_id
        changed = await run_in_threadpool(
            lambda: update_scheduled_poll(
                web.database,
                editing,
                definition,
                image_path=image_path,
                channel_name=channels.get(definition.channel_id),
                ping_role_name=roles.get(definition.ping_role_id or ""),
            )
        )
        if not changed:
            raise HTTPException(409, f"poll {poll_id} opened meanwhile: it can no longer be edited")
        return redirect(f"/polls/{poll_id}")
    poll_id = await run_in_threadpool(
        lambda: create_poll(
            web.database,
            definition,
            creator_id=member.id,
            image_path=image_path,
            server_name=guild.name,
            channel_name=channels.get(definition.channel_id),
            ping_role_name=roles.get(definition.ping_role_id or ""),
        )
    )
    chosen = Preferences(guild_id, definition.channel_id, definition.ping_role_id, definition.timezone)
    await run_in_threadpool(remember, web.database, member.id, chosen)
    return redirect(f"/polls/{poll_id}")


def _guild_problems(data: dict[str, Any], details: GuildDetails) -> list[str]:
    """What only the guild can tell: its channel, its custom emojis, its role."""
    problems = []
    channel = data.get("channel_id")
    if channel and channel not in dict(details.channels):
        problems.append(f"poll: channel_id: {channel}: not a text channel of this server")
    for i, emoji in enumerate(data.get("emojis") or []):
        if isinstance(emoji, str) and emoji.startswith("<") and emoji not in details.emojis:
            problems.append(f"poll: emojis[{i}]: {emoji}: not a custom emoji of this server")
    role = data.get("ping_role_id")
    if role and role not in dict(details.roles):
        problems.append(f"poll: ping_role_id: {role}: not a role of this server")
    return problems


async def import_polls(request: Request) -> Response:
    web = _web(request)
    guild_id = str(request.path_params["guild_id"])
    member, guild = await web.member_guild(request, guild_id)
    if request.method == "GET":
        return web.render(request, "import.html", {"guild": guild, "problems": []})
    form = await checked_form(request)
    try:
        return await _import(request, web, form, member.id, guild)
    finally:
        await form.close()


async def _import(request: Request, web: WebState, form: FormData, member_id: str, guild: Any) -> Response:
    guild_id = guild.id
    upload = form.get("file")
    problems: list[str] = []
    items: list[Any] = []
    if upload is None or isinstance(upload, str) or not upload.filename:
        problems.append("file: choose a JSON file in upstream's import format")
    else:
        raw = await upload.read(MAX_FILE_BYTES + 1)
        name = Path(upload.filename).name
        if len(raw) > MAX_FILE_BYTES:
            problems.append(f"{name}: larger than {MAX_FILE_BYTES:,} bytes (8 MB)")
        else:
            try:
                parsed = json.loads(raw.decode("utf-8-sig"))
                items = parsed if isinstance(parsed, list) else [parsed]
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                problems.append(f"{name}: is not valid UTF-8 JSON ({err})")
    definitions = []
    for index, item in enumerate(items):
        where = f"poll {index + 1}"
        if isinstance(item, dict) and item.get("server_id") not in (None, "", guild_id, int(guild_id)):
            problems.append(f"{where}: server_id: {item.get('server_id')}: must be this server ({guild_id})")
            continue
        definition, errs = validate_poll(item, where, now=utcnow_naive(), defaults={"server_id": guild_id})
        problems += errs
        if definition is not None:
            definitions.append(definition)
    if problems or not definitions:
        problems = problems or ["the file holds no polls"]
        return web.render(request, "import.html", {"guild": guild, "problems": problems}, status=400)
    try:
        ids = await run_in_threadpool(
            lambda: service.create_polls(web.database, definitions, creator_id=member_id)
        )
    except PollValidationError as err:
        return web.render(
            request, "import.html", {"guild": guild, "problems": list(err.problems)}, status=400
        )
    return redirect(f"/servers/{guild_id}/polls?status=scheduled&imported={len(ids)}")


# --- one poll ------------------------------------------------------------------------------------


async def show(request: Request) -> Response:
    web, poll_id, server_id = await _poll_guild(request)
    details = await run_in_threadpool(_show, web, poll_id)
    return web.render(
        request,
        "poll.html",
        {
            "d": details,
            "p": details.poll,
            "server_id": server_id,
            "local": format_local,
            "zone": details.poll.timezone or DEFAULT_TIMEZONE,
        },
    )


def _show(web: WebState, poll_id: int) -> reports.PollDetails:
    try:
        return reports.show_poll(web.database, poll_id)
    except PollNotFoundError:
        raise HTTPException(404, f"there is no poll {poll_id}") from None


async def results_fragment(request: Request) -> Response:
    web, poll_id, _ = await _poll_guild(request)
    details = await run_in_threadpool(_show, web, poll_id)
    return web.render(request, "_results.html", {"d": details, "p": details.poll})


async def close(request: Request) -> Response:
    web, poll_id, _ = await _poll_guild(request)
    await checked_form(request)
    await run_in_threadpool(service.close_poll, web.database, poll_id)
    return redirect(f"/polls/{poll_id}")


async def reopen(request: Request) -> Response:
    web, poll_id, _ = await _poll_guild(request)
    form = await checked_form(request)
    raw = str(form.get("extend_minutes") or "").strip()
    if raw and not raw.isdigit():
        raise HTTPException(400, f"extend minutes: {raw[:20]!r} is not a whole number of minutes")
    try:
        await run_in_threadpool(
            lambda: service.reopen_poll(
                web.database,
                poll_id,
                now=utcnow_naive(),
                extend_minutes=int(raw) if raw else None,
                reset_votes=form.get("reset_votes") == "on",
            )
        )
    except (PollStateError, ValueError) as err:
        raise HTTPException(400, str(err).replace("pass --extend-minutes N", "give extend minutes")) from None
    return redirect(f"/polls/{poll_id}")


async def delete(request: Request) -> Response:
    web, poll_id, server_id = await _poll_guild(request)
    if request.method == "GET":
        details = await run_in_threadpool(_show, web, poll_id)
        return web.render(request, "delete.html", {"p": details.poll, "d": details})
    await checked_form(request)
    await run_in_threadpool(service.delete_poll, web.database, poll_id)
    return redirect(f"/servers/{server_id}/polls")


async def export(request: Request) -> Response:
    web, poll_id, _ = await _poll_guild(request)
    data = await run_in_threadpool(lambda: reports.export_poll(web.database, poll_id, now=utcnow_naive()))
    body = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    headers = {"Content-Disposition": f'attachment; filename="poll-{poll_id}.json"'}
    return Response(body, media_type="application/json", headers=headers)
