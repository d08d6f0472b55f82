"""The sandbox gateway: faults at configured rates, the retry-after window, ground truth, events,
bounds, and the simulated voters, all on an injected RNG and clock."""

from __future__ import annotations

import asyncio
import random

import pytest

from polly.engine.gateway import Embed, ReactionEvent
from polly.errors import ForbiddenError, GatewayError, NotFoundError, RateLimitedError, ServerError
from polly.sandbox.gateway import SANDBOX_BOT_ID, FaultRates, SandboxGateway
from polly.sandbox.voters import FIRST_VOTER_ID, SandboxVoters

EMBED = Embed(title="Q?")
CH = 10
USER = 500


class FakeClock:
    """Monotonic seconds that only move when slept on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(
    clock: FakeClock,
    faults: FaultRates | None = None,
    *,
    max_events: int = 10_000,
    max_messages: int = 50_000,
    max_channels: int = 10_000,
    max_tracked_voters: int = 500_000,
) -> SandboxGateway:
    return SandboxGateway(
        rng=random.Random(7),
        clock=clock,
        sleep=clock.sleep,
        faults=faults,
        max_events=max_events,
        max_messages=max_messages,
        max_channels=max_channels,
        max_tracked_voters=max_tracked_voters,
    )


def drain(sb: SandboxGateway) -> list[ReactionEvent]:
    out = []
    while sb.event_stats().depth:
        out.append(sb._events._queue.get_nowait())
    return out


async def poll(sb: SandboxGateway, channel: int = CH, emojis: tuple[str, ...] = ("1️⃣", "2️⃣")) -> int:
    posted = await sb.post_poll_message(channel, embed=EMBED, emojis=emojis)
    assert posted.missing_emojis == ()
    return posted.message_id


async def test_faults_follow_their_rates_and_are_counted(clock: FakeClock) -> None:
    sb = make(clock)
    mids = [await poll(sb, channel=c) for c in range(400)]
    sb.set_faults(FaultRates(not_found=0.1, forbidden=0.1, rate_limited=0.1, server_error=0.1))
    seen: dict[type[Exception], int] = {}
    for c, mid in enumerate(mids):  # one call per channel: no retry-after window is hit
        try:
            await sb.fetch_message(c, mid)
        except (NotFoundError, ForbiddenError, RateLimitedError, ServerError) as err:
            seen[type(err)] = seen.get(type(err), 0) + 1
    faults = sb.counters().faults
    assert seen == {
        NotFoundError: faults["not_found"],
        ForbiddenError: faults["forbidden"],
        RateLimitedError: faults["rate_limited"],
        ServerError: faults["server_error"],
    }
    for n in faults.values():
        assert 20 <= n <= 60, faults  # 10 % of 400, seeded
    assert sb.counters().rate_limit_violations == 0


async def test_a_429_blocks_its_channel_until_retry_after(clock: FakeClock) -> None:
    sb = make(clock)
    mid = await poll(sb)
    sb.set_faults(FaultRates(rate_limited=1.0, retry_after_seconds=(2.0, 2.0)))
    with pytest.raises(RateLimitedError) as info:
        await sb.add_reaction(CH, mid, "1️⃣")
    assert info.value.retry_after_seconds == 2.0
    sb.set_faults(FaultRates())
    clock.now += 1.5
    with pytest.raises(RateLimitedError, match="before the retry-after ended") as again:
        await sb.fetch_message(CH, mid)
    assert again.value.retry_after_seconds == pytest.approx(0.5)
    assert sb.counters().rate_limit_violations == 1
    await sb.send_message(CH + 1, content="other channels are not blocked")
    clock.now += 0.5
    assert (await sb.fetch_message(CH, mid)).message_id == mid


async def test_message_deleted_fault_is_permanent_and_keeps_truth(clock: FakeClock) -> None:
    sb = make(clock)
    mid = await poll(sb)
    assert sb.user_add_reaction(mid, USER, "1️⃣")
    sb.set_faults(FaultRates(message_deleted=1.0))
    with pytest.raises(NotFoundError):
        await sb.fetch_message(CH, mid)
    sb.set_faults(FaultRates())
    with pytest.raises(NotFoundError):
        await sb.fetch_message(CH, mid)
    truth = sb.truth(mid)
    assert truth.deleted
    assert truth.voters[USER].held == {"1️⃣"}
    assert sb.counters().faults == {"message_deleted": 1}
    assert not sb.user_add_reaction(mid, USER + 1, "2️⃣")
    assert sb.pick_votable(random.Random(0)) is None


async def test_latency_uses_the_injected_sleep(clock: FakeClock) -> None:
    sb = make(clock, FaultRates(latency=1.0, latency_seconds=0.5))
    await sb.send_message(CH, content="x")
    assert len(clock.slept) == 1
    assert 0.0 <= clock.slept[0] <= 0.5


def test_fault_rates_are_checked() -> None:
    with pytest.raises(ValueError, match=r"add up to 1\.2"):
        FaultRates(not_found=0.6, server_error=0.6)
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultRates(latency=2.0)
    with pytest.raises(ValueError, match="retry_after"):
        FaultRates(retry_after_seconds=(0.0, 1.0))


async def test_events_follow_discord(clock: FakeClock) -> None:
    sb = make(clock)
    sb.ensure_channel(CH, guild_id=77)
    mid = await poll(sb, emojis=("1️⃣",))
    assert drain(sb) == [ReactionEvent("add", 77, CH, mid, SANDBOX_BOT_ID, "1️⃣", is_bot=True)]
    sb.user_add_reaction(mid, USER, "1️⃣")
    await sb.remove_reaction(CH, mid, "1️⃣", USER)  # the bot removes the user's reaction
    sb.user_add_reaction(mid, USER, "1️⃣")
    sb.user_remove_reaction(mid, USER, "1️⃣")
    sb.user_add_reaction(mid, USER, "1️⃣")
    await sb.clear_reactions(CH, mid)  # no per-user events, as on Discord
    kinds = [(e.kind, e.user_id, e.is_bot) for e in drain(sb)]
    assert kinds == [
        ("add", USER, False),
        ("remove", USER, False),
        ("add", USER, False),
        ("remove", USER, False),
        ("add", USER, False),
    ]
    voter = sb.truth(mid).voters[USER]
    assert (voter.adds, voter.removes) == ({"1️⃣": 3}, {"1️⃣": 1})  # the bot's removal is not the user's
    assert voter.held == {"1️⃣"}
    counters = sb.counters()
    assert (counters.user_adds, counters.user_removes, counters.bot_removals, counters.clears) == (3, 1, 1, 1)


async def test_truth_gives_single_and_multiple_choice_intent(clock: FakeClock) -> None:
    sb = make(clock)
    mid = await poll(sb, emojis=("1️⃣", "2️⃣", "3️⃣"))
    for emoji in ("2️⃣", "1️⃣", "3️⃣"):
        sb.user_add_reaction(mid, USER, emoji)
    sb.user_remove_reaction(mid, USER, "3️⃣")
    voter = sb.truth(mid).voters[USER]
    assert voter.last_added == "3️⃣"
    assert voter.held == {"1️⃣", "2️⃣"}
    assert not sb.user_add_reaction(mid, USER, "1️⃣")  # already shown: nothing happens
    assert sb.truth(mid).reactions["1️⃣"] == {SANDBOX_BOT_ID, USER}


async def test_caps_refuse_and_count(clock: FakeClock) -> None:
    sb = make(clock, max_tracked_voters=2, max_channels=2)
    mid = await poll(sb)
    assert sb.user_add_reaction(mid, 1, "1️⃣")
    assert sb.user_add_reaction(mid, 2, "1️⃣")
    assert not sb.user_add_reaction(mid, 3, "1️⃣")
    assert sb.user_add_reaction(mid, 1, "2️⃣")  # a known pair may still act
    for i in range(18):
        sb.user_add_reaction(mid, 1, f"e{i}")
    assert not sb.user_add_reaction(mid, 2, "e-twenty-first")
    assert sb.counters().refused == 2
    assert sb.counters().tracked_voters == 2
    await sb.send_message(CH + 1, content="second channel")
    with pytest.raises(NotFoundError, match="limit of 2"):
        await sb.send_message(CH + 2, content="third")


async def test_message_cap_evicts_only_messages_without_votes(clock: FakeClock) -> None:
    sb = make(clock, max_messages=2)
    voted = await poll(sb)
    sb.user_add_reaction(voted, USER, "1️⃣")
    plain = await sb.send_message(CH, content="ping")
    third = await sb.send_message(CH, content="results")
    assert sb.message_ids() == [voted, third]
    assert plain not in sb.message_ids()
    sb.user_add_reaction(third, USER, "🎉")
    with pytest.raises(GatewayError, match="limit of 2 messages"):
        await sb.send_message(CH, content="one too many")
    assert sb.counters().evicted_messages == 1


async def test_event_queue_is_bounded(clock: FakeClock) -> None:
    sb = make(clock, max_events=3)
    mid = await poll(sb)  # two bot events
    for user in range(5):
        sb.user_add_reaction(mid, user, "1️⃣")
    stats = sb.event_stats()
    assert (stats.depth, stats.accepted, stats.dropped) == (3, 3, 4)
    assert len(sb.truth(mid).voters) == 5  # the truth has what the engine may have missed


async def test_channels_are_created_on_first_use(clock: FakeClock) -> None:
    sb = make(clock)
    mid = await sb.send_message(999, content="hi")
    assert sb.truth(mid).guild_id == 1
    sb.ensure_channel(999, guild_id=55)
    assert sb.truth(await sb.send_message(999, content="again")).guild_id == 55
    assert sb.counters().channels == 1


async def test_lifecycle(clock: FakeClock) -> None:
    sb = make(clock)
    assert not sb.is_ready()
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(sb.start())
        await asyncio.wait_for(sb.wait_until_ready(), 5)
        assert sb.is_ready()
        await sb.close()
    assert runner.done()
    assert not sb.is_ready()


async def test_voters_act_at_their_rate_on_known_polls_only(clock: FakeClock) -> None:
    sb = make(clock)
    voters = SandboxVoters(
        sb, voters=50, events_per_second=200, rng=random.Random(3), clock=clock, sleep=clock.sleep
    )
    assert await voters.run(duration_seconds=0.1) == 20
    assert voters.stats().idle == 20  # nothing to vote on yet
    assert voters.stats().acts == 0
    open_polls = [await poll(sb, channel=c, emojis=("🅰", "🅱", "🅲")) for c in range(5)]
    closed = await poll(sb, channel=9)
    await sb.clear_reactions(9, closed)
    drain(sb)
    steps = await voters.run(duration_seconds=1.0)
    assert steps == 200
    assert voters.stats().acts == 200
    events = drain(sb)
    assert len(events) == 200
    assert {e.message_id for e in events} <= set(open_polls)
    assert all(FIRST_VOTER_ID <= e.user_id < FIRST_VOTER_ID + 50 for e in events)
    for mid in open_polls:  # nobody removed anything for the users: reactions = held intents
        truth = sb.truth(mid)
        for emoji, users in truth.reactions.items():
            assert users - {SANDBOX_BOT_ID} == {u for u, v in truth.voters.items() if emoji in v.held}
    c = sb.counters()
    assert c.user_adds + c.user_removes == 200


async def test_voters_do_not_flood_after_a_stall(clock: FakeClock) -> None:
    sb = make(clock, max_events=100_000)
    await poll(sb)

    async def stalling_sleep(seconds: float) -> None:
        clock.now += 10.0  # every tick the loop is stalled for 10 s
        await asyncio.sleep(0)

    rng = random.Random(1)
    voters = SandboxVoters(
        sb, voters=10, events_per_second=100, rng=rng, clock=clock, sleep=stalling_sleep, max_burst=5
    )
    assert await voters.run(max_acts=12) == 12
    assert voters.stats().acts == 12
    assert clock.now == 30.0  # 0 + 5 + 5 + 2 acts over three stalled ticks
