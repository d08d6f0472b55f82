"""The dashboard in real headless Chromium (Playwright, Debian's ``chromium``), served by ``polly run``
beside the engine, against the loopback Discord: sign in, create a poll with an image and a custom
emoji, see the engine post it, vote through the gateway, watch the live results, close, reopen,
export, import a file with errors, sign out.

``POLLY_TEST_SCREENSHOTS=1`` rewrites the screenshots under ``docs/`` from this run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from tests.discord_standin import DiscordStandin
from tests.e2e.polly_process import PollyProcess, Rows, eventually, polly_env
from tests.web.support import PNG, SECRET_KEY, build_world

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]
DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("POLLY_REQUIRE_SERVICES") == "1":
            pytest.fail("chromium is not installed (apt-get install -y chromium; .ci/prepare does it)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_member_runs_a_poll_from_the_browser(sqlite_url: str, tmp_path: Path) -> None:  # noqa: PLR0915
    executable = _chromium()
    from playwright.async_api import FilePayload, async_playwright, expect

    shots = os.environ.get("POLLY_TEST_SCREENSHOTS") == "1"
    rows = Rows(sqlite_url)
    async with DiscordStandin(heartbeat_ms=1000) as discord:
        world = build_world(discord)
        voters = [discord.add_member(f"voter{i}") for i in range(2)]
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        env = polly_env(
            discord, sqlite_url,
            DISCORD_CLIENT_ID=discord.oauth.client_id, DISCORD_CLIENT_SECRET=discord.oauth.client_secret,
            DISCORD_REDIRECT_URI=f"{base}/auth/callback", SECRET_KEY=SECRET_KEY,
            POLLY_WEB__HOST="127.0.0.1", POLLY_WEB__PORT=str(port),
            POLLY_WEB__OAUTH_AUTHORIZE_URL=f"{discord.base_url}/oauth2/authorize",
            POLLY_ENGINE__IMAGE_ROOT=str(tmp_path),
        )  # fmt: skip
        polly = await PollyProcess.start(env)
        try:
            await polly.wait_for_line(r"polly is running", within=60)
            await polly.wait_for_line(r"dashboard on http://127\.0\.0\.1", within=5)
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=executable, headless=True, args=["--no-sandbox"]
                )
                context = await browser.new_context(
                    accept_downloads=True, viewport={"width": 1100, "height": 900}
                )
                page = await context.new_page()

                async def shot(name: str) -> None:
                    if shots:
                        await page.screenshot(path=str(DOCS / f"dashboard-{name}.png"), full_page=True)

                # 1. sign in with Discord
                discord.oauth.signed_in = world.manager
                await page.goto(base)
                await shot("sign-in")
                await page.click("#sign-in")
                await expect(page.locator("h1")).to_have_text("Your servers")
                await shot("servers")
                # 2. pick the server, then the channel in a new poll with an image and a custom emoji
                await page.click(f"[data-server='{discord.guild.id}']")
                await page.click("#new-poll")
                await page.fill("input[name=name]", "Team lunch")
                await page.fill("textarea[name=question]", "Where do we eat on Friday?")
                await page.fill("input[name=option_0]", "Pizza")
                await page.fill("input[name=emoji_0]", world.emoji)
                await page.fill("input[name=option_1]", "Tacos")
                await page.select_option("select[name=channel_id]", str(discord.channel.id))
                await page.check("input[name=open_immediately]")
                await page.fill("input[name=timezone]", "Europe/Berlin")
                await page.set_input_files(
                    "input[name=image]",
                    files=[FilePayload(name="menu.png", mimeType="image/png", buffer=PNG)],
                )
                await page.fill("textarea[name=image_message_text]", "Today's menu")
                await shot("new-poll")
                await page.click("#create")
                await expect(page.locator("#status")).to_have_text("scheduled")
                poll_id = int(page.url.rsplit("/", 1)[1])
                # 3. the running engine posts it: the image with its text, then the poll with its reactions
                await eventually(
                    lambda: rows.message_id(poll_id) is not None, "poll posted", context=lambda: polly.output
                )
                message_id = rows.message_id(poll_id)
                assert message_id is not None
                posted = discord.messages_in()
                assert any(m.attachments and m.content == "Today's menu" for m in posted)
                await eventually(
                    lambda: len(discord.reactors(message_id, world.emoji)) == 1, "reactions added"
                )
                # 4. vote through the gateway; 5. the live results change without a reload
                await page.reload()
                await expect(page.locator("#status")).to_have_text("active")
                marker = await page.evaluate("() => (window.__sameDocument = 42)")
                discord.react(voters[0], message_id, world.emoji)
                discord.react(voters[1], message_id, world.emoji)
                await expect(page.locator("[data-option='0']")).to_have_text("2", timeout=20_000)
                assert await page.evaluate("() => window.__sameDocument") == marker  # no full reload
                await shot("poll-live")
                # 6. close it, 7. reopen it
                await page.click("#close")
                await expect(page.locator("#status")).to_have_text("closed")
                await shot("poll-results")
                await page.fill("input[name=extend_minutes]", "45")
                await page.click("#reopen")
                await expect(page.locator("#status")).to_have_text("active")
                # 8. export it
                async with page.expect_download() as download_info:
                    await page.click("#export")
                download = await download_info.value
                exported = json.loads(
                    await asyncio.to_thread(Path(await download.path()).read_text, encoding="utf-8")
                )
                assert exported["name"] == "Team lunch"
                assert exported["emojis"][0] == world.emoji
                # 9. import a file with errors: every problem at once
                await page.goto(f"{base}/servers/{discord.guild.id}/import")
                bad = [
                    {"name": "x", "question": "?", "options": ["one"]},
                    {"name": "Fine name", "question": "Fine question", "options": ["a", "b"], "colour": 1},
                ]
                await page.set_input_files(
                    "input[name=file]",
                    files=[
                        FilePayload(
                            name="bad.json", mimeType="application/json", buffer=json.dumps(bad).encode()
                        )
                    ],
                )
                await page.click("#do-import")
                problems = page.locator("#problems li")
                await expect(problems).to_have_count(6)  # name, question, options, 2 channel_id, colour
                await expect(page.locator("#problems")).to_contain_text("colour: unknown field")
                await shot("import-errors")
                await page.goto(f"{base}/servers/{discord.guild.id}/polls?status=active")
                await shot("polls")
                # 10. sign out
                await page.click("#sign-out")
                await expect(page.locator("#sign-in")).to_be_visible()
                await page.goto(f"{base}/servers")
                await expect(page.locator("#sign-in")).to_be_visible()
                await browser.close()
            assert "Traceback" not in polly.output
            assert discord.oauth.client_secret not in polly.output
            assert SECRET_KEY not in polly.output
        finally:
            await polly.stop()
            rows.close()
