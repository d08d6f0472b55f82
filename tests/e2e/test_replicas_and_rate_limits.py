"""Two ``polly run`` replicas on one database and one Discord post nothing twice; a 429 on a
reaction route is honoured: no call to that bucket inside its retry-after window."""

from __future__ import annotations

import signal

import pytest

from tests.discord_standin import DiscordStandin
from tests.e2e.polly_process import PollyProcess, Rows, eventually, polly_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
A, B, C = "🇦", "🇧", "🇨"


async def test_a_second_replica_posts_nothing_twice(postgres_url: str) -> None:
    rows = Rows(postgres_url)
    async with DiscordStandin() as discord:
        users = [discord.add_member(f"voter{i}") for i in range(4)]
        polls = [rows.add_poll(discord, name=f"P{i}", multiple_choice=True, max_choices=3) for i in range(3)]
        env = polly_env(discord, postgres_url)
        replicas = [await PollyProcess.start(env), await PollyProcess.start(env)]

        def out() -> str:
            return "\n---\n".join(r.output for r in replicas)

        try:
            await eventually(lambda: all(rows.message_id(p) for p in polls), "all posted", 40, context=out)
            messages = [rows.message_id(p) for p in polls]
            bot = discord.world.bot.id
            await eventually(
                lambda: all(discord.reactors(m, e) == [bot] for m in messages if m for e in (A, B, C)),
                "reactions", context=out,
            )  # fmt: skip
            for user in users:
                for m in messages:
                    assert m is not None
                    discord.react(user, m, A)
                    discord.react(user, m, C)
            expected = {u.id: {0, 2} for u in users}
            await eventually(lambda: all(rows.votes(p) == expected for p in polls), "votes", context=out)
            for replica in replicas:  # both are running and connected
                await replica.wait_for_line(r"gateway connected", within=10)
            for replica in replicas:
                replica.signal(signal.SIGINT)
            codes = [await r.wait(20) for r in replicas]
            vote_rows = rows.vote_rows()
        finally:
            for replica in replicas:
                await replica.stop()
            rows.close()
        assert codes == [0, 0], out()
        assert len(discord.messages_in()) == 3  # one message per poll
        assert len(discord.rest.log.matching("POST", f"/channels/{discord.channel.id}/messages")) == 3
        assert vote_rows == 3 * len(users) * 2  # each vote once, though both replicas saw it
        assert discord.gateway.counters.identifies == 2


@pytest.mark.parametrize(
    "edge",
    [
        pytest.param(False, id="discord-429"),
        pytest.param(True, id="edge-429"),  # no Via: discord.py raises, the engine's gate holds the route
    ],
)
async def test_no_call_inside_a_reaction_routes_retry_after_window(sqlite_url: str, edge: bool) -> None:
    rows = Rows(sqlite_url)
    async with DiscordStandin() as discord:
        users = [discord.add_member(f"voter{i}") for i in range(6)]
        poll_id = rows.add_poll(discord)  # single choice: polly removes each voter's reaction
        polly = await PollyProcess.start(polly_env(discord, sqlite_url))
        try:
            await eventually(
                lambda: rows.message_id(poll_id) is not None, "posted", context=lambda: polly.output
            )
            message = rows.message_id(poll_id)
            assert message is not None
            await eventually(
                lambda: len(discord.reactors(message, C)) == 1, "reactions", context=lambda: polly.output
            )
            retry_after = 2.0
            route = f"DELETE /channels/{discord.channel.id}/messages/{message}/reactions/"
            discord.rate_limit(route, retry_after, times=2, via=not edge)
            for user in users:
                discord.react(user, message, B)
            expected = {u.id: {1} for u in users}
            await eventually(
                lambda: rows.votes(poll_id) == expected, "votes", 30, context=lambda: polly.output
            )
            await eventually(lambda: discord.reactors(message, B) == [discord.world.bot.id], "removed", 30)
            polly.signal(signal.SIGINT)
            assert await polly.wait(20) == 0
        finally:
            await polly.stop()
            rows.close()
    bucket = [
        s
        for s in discord.rest.log.entries
        if f"/messages/{message}/reactions" in s.path and s.method != "GET"
    ]
    limited = [s for s in bucket if s.status == 429]
    assert len([s for s in limited if s.retry_after == 2.0]) == 2  # the injected ones (others: real limits)
    for hit in limited:
        assert hit.retry_after is not None
        inside = [s for s in bucket if hit.at < s.at < hit.at + hit.retry_after]
        assert not inside, f"{len(inside)} call(s) within {hit.retry_after} s of a 429: {inside}"
