"""``polly run`` (not ``--sandbox``) as a subprocess, through discord.py's real REST client and
gateway, against the loopback Discord: the path every deployment takes."""

from __future__ import annotations

import signal
import time

import pytest

from tests.discord_standin import DiscordStandin
from tests.discord_standin.model import User
from tests.e2e.polly_process import PollyProcess, Rows, eventually, polly_cli, polly_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]
A, B, C = "🇦", "🇧", "🇨"


def _clean(output: str) -> None:
    for bad in ("Traceback", "Unclosed client session", "PyNaCl", "davey", "Attempting a reconnect"):
        assert bad not in output, f"{bad!r} in polly's output:\n{output}"


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
async def test_polls_votes_outages_close_and_sigint(db: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(f"{db}_url")
    rows = Rows(url)
    async with DiscordStandin(heartbeat_ms=1000) as discord:
        role = discord.add_role("voters")
        users = [discord.add_member(f"user{i}") for i in range(7)]
        single = rows.add_poll(
            discord, name="Lunch", ping_role_enabled=True, ping_role_id=str(role.id), ping_role_on_close=True
        )
        multi = rows.add_poll(discord, name="Games", multiple_choice=True, max_choices=2)
        # Only api_base is set: the gateway URL comes from GET /gateway/bot.
        polly = await PollyProcess.start(polly_env(discord, url))
        started = time.monotonic()
        try:
            await _scenario(
                discord,
                rows=rows,
                polly=polly,
                single=single,
                multi=multi,
                users=users,
                role_id=role.id,
                url=url,
            )
        finally:
            await polly.stop()
            rows.close()
        print(f"e2e[{db}]: {time.monotonic() - started:.1f} s, gateway {discord.gateway.counters}")


async def _scenario(  # noqa: PLR0915 - one story, told in order
    discord: DiscordStandin,
    *,
    rows: Rows,
    polly: PollyProcess,
    single: int,
    multi: int,
    users: list[User],
    role_id: int,
    url: str,
) -> None:
    out = lambda: polly.output  # noqa: E731
    # 1. Both scheduled polls open: posted, with their reactions, ping on open.
    await eventually(
        lambda: bool(rows.message_id(single) and rows.message_id(multi)), "both polls posted", context=out
    )
    m1, m2 = rows.message_id(single), rows.message_id(multi)
    assert m1 is not None
    assert m2 is not None
    bot = discord.world.bot.id
    await eventually(
        lambda: all(discord.reactors(m, e) == [bot] for m in (m1, m2) for e in (A, B, C)),
        "reactions",
        context=out,
    )
    assert discord.rest.log.matching("GET", "/gateway/bot")
    opened = discord.world.messages[m1]
    assert opened.content.startswith(f"<@&{role_id}>")
    assert opened.mention_roles == [role_id]

    # 2. Votes: adds, a change of mind on single choice, multiple choice over max_choices, a removal.
    u = users
    discord.react(u[0], m1, A)
    discord.react(u[1], m1, B)
    discord.react(u[2], m1, A)
    discord.react(u[0], m2, A)
    discord.react(u[0], m2, B)
    discord.react(u[1], m2, A)
    await eventually(lambda: rows.votes(single).get(u[2].id) == {0}, "u2 voted A", context=out)
    discord.react(u[2], m1, B)  # changes their mind
    discord.react(u[0], m2, C)  # a third choice: over max_choices=2, rejected
    await eventually(lambda: u[1].id in rows.votes(multi), "u1 voted on multi", context=out)
    discord.unreact(u[1], m2, A)  # takes it back
    expected_single = {u[0].id: {0}, u[1].id: {1}, u[2].id: {1}}
    expected_multi = {u[0].id: {0, 1}}
    await eventually(lambda: rows.votes(single) == expected_single, "single-choice votes", context=out)
    await eventually(lambda: rows.votes(multi) == expected_multi, "multiple-choice votes", context=out)
    # polly removed the voter's reaction on single choice, and the rejected third choice.
    await eventually(lambda: discord.reactors(m1, A) == [bot] and discord.reactors(m1, B) == [bot], "removed")
    await eventually(lambda: discord.reactors(m2, C) == [bot], "rejected reaction removed")
    # Coalesced: fewer results edits than vote changes, and the last one shows the counts.
    await eventually(
        lambda: "3 voters" in str(discord.world.messages[m1].embeds), "results embed", context=out
    )
    edits_m1 = len(discord.rest.log.matching("PATCH", f"/messages/{m1}"))
    assert 1 <= edits_m1 < 4, edits_m1  # 4 vote changes on the single-choice poll

    # 3. The gateway drops mid-vote: polly resumes and the missed dispatch is replayed.
    resumes = discord.gateway.counters.resumes
    await discord.gateway.drop()
    discord.react(u[3], m1, A)
    await eventually(lambda: discord.gateway.counters.resumes > resumes, "resumed", context=out)
    await eventually(lambda: rows.votes(single).get(u[3].id) == {0}, "vote during the drop", context=out)
    assert discord.gateway.counters.replayed >= 1

    # 4. Invalid session while Discord refuses connections: the vote cast meanwhile reaches no
    #    session; polly re-identifies and the repair pass records it.
    identifies = discord.gateway.counters.identifies
    discord.gateway.accepting = False
    discord.gateway.invalidate(resumable=False)
    discord.react(u[4], m1, B)
    await polly.wait_for_line(r"Discord unreachable since", within=20)
    discord.gateway.accepting = True
    await eventually(
        lambda: discord.gateway.counters.identifies > identifies, "re-identified", 40, context=out
    )
    await eventually(lambda: rows.votes(single).get(u[4].id) == {1}, "repaired vote", context=out)
    await polly.wait_for_line(r"Discord reachable again after", within=10)
    await polly.wait_for_line(r"gateway connected \(latency \d+ ms, [1-9]\d* reconnects\)", within=10)

    # 5. `polly poll close`: final embed, reactions cleared, the role pinged with the results.
    rc, cli_out = await polly_cli(polly_env(discord, url), "poll", "close", str(single))
    assert rc == 0, cli_out
    await eventually(lambda: not discord.world.messages[m1].reactions, "reactions cleared", context=out)
    await eventually(lambda: "Closed" in str(discord.world.messages[m1].embeds), "final embed", context=out)
    await eventually(lambda: len(discord.messages_in()) == 3, "the ping", context=out)
    ping = discord.messages_in()[-1]
    assert ping.content.startswith(f"<@&{role_id}> 📊 **Lunch** has closed. Winner: Green (3 votes)")
    assert ping.mention_roles == [role_id]
    assert rows.votes(single) == {**expected_single, u[3].id: {0}, u[4].id: {1}}
    assert rows.votes(multi) == expected_multi

    # 6. SIGINT: a clean exit 0.
    polly.signal(signal.SIGINT)
    assert await polly.wait(20) == 0, polly.output
    assert "polly is running" in polly.output
    assert "stopping" in polly.output
    assert polly.output.count("Discord unreachable since") == 1
    _clean(polly.output)
    assert len(discord.messages_in()) == 3  # two polls (one pinging on open), one close ping: nothing twice
