"""The scheduler: the database says what is due; every tick opens and closes what is.

There are no in-memory jobs to lose. Each :meth:`PollScheduler.tick`:

1. opens scheduled polls whose open time has come, overdue ones included (a scheduled poll whose
   close time has also passed is closed without being posted, as upstream's recovery does);
2. takes over opens interrupted by a crash (a claim older than ``claim_lease``);
3. closes active polls whose close time has passed: final results, reactions cleared, the role
   ping when the poll asks for one;
4. follows changes made by others (``polly poll close/reopen``, upstream's web app, another
   replica): a poll it knew as active that is now closed gets its final embed (and the role ping
   when the poll asks for one on close, as upstream pings on every close); an active poll it did
   not know gets its embed refreshed and its reactions ensured.

Failures: a transient one (5xx, transport, 429) is retried on a later tick. A permanent one (a
plain :class:`~polly.errors.GatewayError`: Discord's 400, e.g. more than 20 reactions on a message)
is final for that poll and reported once. A 404 on the final results edit is retried with backoff;
only 404s for ``orphan_after`` mean the message is gone.

Every transition is a conditional update (:mod:`polly.engine.store`), so two replicas never open
or close a poll twice. Discord calls happen outside any transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from polly.clock import Backoff
from polly.db.poll_rows import PollView
from polly.engine.embeds import poll_embed
from polly.engine.finalizer import Finalizer
from polly.engine.gateway import MAX_REACTIONS_PER_MESSAGE, AllowedMentions, Gateway
from polly.engine.store import PollStore, claim_time, claim_token
from polly.errors import CorruptPollError, ForbiddenError, GatewayError, NotFoundError, RateLimitedError

logger = logging.getLogger(__name__)
#: a failed post is retried after 2 s, doubling, at most the claim's lease
POST_RETRY_INITIAL_SECONDS = 2.0

Clock = Callable[[], datetime]
#: ``(poll_id, transition, replica)``, called after this replica won a transition.
TransitionObserver = Callable[[int, str, str], None]


@dataclass(slots=True)
class SchedulerStats:
    """Cumulative counters of one scheduler."""

    ticks: int = 0
    opened: int = 0
    closed: int = 0
    closed_unopened: int = 0
    orphaned: int = 0
    takeovers: int = 0
    late_claims: int = 0
    open_failures: int = 0
    corrupt_rows: int = 0
    adopted: int = 0
    finalized_external: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    permanent_failures: int = 0


def is_permanent(err: GatewayError) -> bool:
    """A failure retrying cannot fix: Discord's 400-class answers (a plain ``GatewayError``)."""
    return type(err) is GatewayError


class PollScheduler:
    """Opens and closes polls as the database says, safely beside other replicas."""

    def __init__(
        self,
        store: PollStore,
        gateway: Gateway,
        *,
        replica: str,
        clock: Clock,
        claim_lease: timedelta = timedelta(minutes=2),
        orphan_after: timedelta = timedelta(hours=6),
        batch: int = 200,
        max_known: int = 100_000,
        on_transition: TransitionObserver | None = None,
        on_results_changed: Callable[[int], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_closed: Callable[[int], Awaitable[None]] | None = None,
        image_root: Path = Path(),
    ) -> None:
        self._image_root = image_root
        self._store = store
        self._monotonic = monotonic
        # A 429 holds the scheduler's calls to that channel until its retry-after has passed, as
        # Discord's limits are per route and channel (bounded: one entry per channel being held).
        self._hold_until: dict[int, float] = {}
        self._gateway = gateway
        self.replica = replica
        self._clock = clock
        self._lease = claim_lease
        self._orphan_after = orphan_after
        self._batch = batch
        self._max_known = max_known
        self._on_transition = on_transition
        self._on_results_changed = on_results_changed
        self._known_active: dict[int, int] = {}  # poll id -> channel id, bounded by max_known
        self._open_failed_since: dict[int, datetime] = {}  # bounded: entries only for active claims
        # Our own failed posts, retried with backoff (poll id -> (due monotonic, failures)); other
        # replicas' claims wait for the lease, since only a crash leaves them behind.
        self._retry_post: dict[int, tuple[float, int]] = {}
        self._needs_reactions: dict[int, None] = {}  # posted polls still missing some reactions
        self._permanent: dict[int, None] = {}  # polls whose reactions Discord refused for good (bounded)
        self.finals = Finalizer(
            store, gateway, clock=clock, monotonic=monotonic, orphan_after=orphan_after,
            max_pending=max_known, on_closed=on_closed, on_rate_limited=self._hold,
        )  # fmt: skip
        self._following = False
        self.stats = SchedulerStats()

    def _won(self, poll_id: int, transition: str) -> None:
        if self._on_transition is not None:
            self._on_transition(poll_id, transition, self.replica)

    async def tick(self) -> None:
        """One pass over everything due. Errors in one poll never stop the others."""
        now = self._clock()
        self.stats.ticks += 1
        self._release_holds()
        for poll_id in await self._store.due_to_open(now, self._batch):
            await self._guarded(poll_id, self._open_one(poll_id, now))
        claims = await self._store.stale_claims(self._batch)
        live = {poll_id for poll_id, _ in claims}
        # Both maps describe claimed polls only: a poll closed or taken over elsewhere leaves them.
        self._retry_post = {k: v for k, v in self._retry_post.items() if k in live}
        self._open_failed_since = {k: v for k, v in self._open_failed_since.items() if k in live}
        for poll_id, token in claims:
            taken = claim_time(token)
            retry = self._retry_post.get(poll_id)
            mine_due = retry is not None and retry[0] <= self._monotonic()
            if mine_due or taken is None or now - taken >= self._lease:
                await self._guarded(poll_id, self._take_over(poll_id, token, now))
        for poll_id in await self._store.due_to_close(now, self._batch):
            await self._guarded(poll_id, self._close_one(poll_id, reason="close time reached"))
        await self._ensure_reactions()
        for poll_id, ping, unless_done in self.finals.pending():
            view = await self._safe_view(poll_id)
            if view is None or view.status != "closed":
                self.finals.forget(poll_id)
            elif not self._held(view.channel_id) and self.finals.due(poll_id):
                await self._guarded(poll_id, self.finals.finalize(view, ping=ping, unless_done=unless_done))
        await self._follow_external_changes()

    def _held(self, channel_id: int) -> bool:
        return self._monotonic() < self._hold_until.get(channel_id, 0.0)

    def _release_holds(self) -> None:
        now = self._monotonic()
        self._hold_until = {c: t for c, t in self._hold_until.items() if t > now}

    def _hold(self, channel_id: int, err: RateLimitedError) -> None:
        self._hold_until[channel_id] = self._monotonic() + err.retry_after_seconds
        self.stats.errors["RateLimitedError"] = self.stats.errors.get("RateLimitedError", 0) + 1
        logger.info("channel %s rate limited: its calls wait %.1f s", channel_id, err.retry_after_seconds)

    def _refused(self, poll_id: int, what: str, err: GatewayError) -> None:
        """Report a permanent failure once per poll; the caller stops retrying it."""
        self.stats.permanent_failures += 1
        if poll_id not in self._permanent and len(self._permanent) < self._max_known:
            self._permanent[poll_id] = None
            logger.error("poll %s: %s refused by Discord for good, not retried: %s", poll_id, what, err)

    async def _guarded(self, poll_id: int, work: object) -> None:
        try:
            await work  # type: ignore[misc]
        except CorruptPollError as err:
            self.stats.corrupt_rows += 1
            logger.warning("poll %s left alone: %s", poll_id, err)
        except GatewayError as err:
            if is_permanent(err):
                self._refused(poll_id, "a Discord call", err)
                return
            kind = type(err).__name__
            self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
            logger.warning("poll %s: Discord call failed (%s); the next tick retries", poll_id, kind)

    async def _open_one(self, poll_id: int, now: datetime) -> None:
        poll = await self._store.view(poll_id)
        if poll is None or poll.status != "scheduled":
            return
        if poll.close_time <= now:
            if await self._store.close(poll_id, from_statuses=("scheduled",)):
                self.stats.closed_unopened += 1
                self._won(poll_id, "scheduled->closed")
                logger.info("poll %s closed without opening: its close time had passed", poll_id)
            return
        if self._held(poll.channel_id):
            return
        token = claim_token(self.replica, now)
        if await self._store.claim_open(poll_id, token):
            self._won(poll_id, "scheduled->active")
            await self._post(poll, token, now)

    async def _take_over(self, poll_id: int, old_token: str, now: datetime) -> None:
        poll = await self._store.view(poll_id)
        if poll is None or self._held(poll.channel_id):
            return
        token = claim_token(self.replica, now)
        if token == old_token:  # same second: make the new claim differ from the old one
            token = claim_token(self.replica, now + timedelta(seconds=1))
        if not await self._store.reclaim(poll_id, old_token, token):
            return
        self.stats.takeovers += 1
        await self._post(poll, token, now)

    def _image_of(self, poll: PollView) -> Path | None:
        """The poll's uploaded image under ``image_root``; ``None`` (and a warning) when it is missing."""
        if not poll.image_path:
            return None
        path = (self._image_root / poll.image_path).resolve()
        if not path.is_relative_to(self._image_root.resolve()) or not path.is_file():
            logger.warning(
                "poll %s: image %s not found under %s; posting its text only",
                poll.id,
                poll.image_path,
                self._image_root,
            )
            return None
        return path

    def _schedule_retry(self, poll_id: int) -> None:
        failures = self._retry_post.get(poll_id, (0.0, 0))[1] + 1
        lease = self._lease.total_seconds()
        delay = Backoff(min(POST_RETRY_INITIAL_SECONDS, lease), cap=lease).delay(failures)
        self._retry_post[poll_id] = (self._monotonic() + delay, failures)

    async def _post(self, poll: PollView, token: str, now: datetime) -> None:
        """Post the poll message (after the optional text message) and store its id.

        A failed post keeps the claim; this replica retries it after 2 s, doubling up to the claim
        lease, and any replica takes it over once the lease has run out.
        """
        self._schedule_retry(poll.id)  # cleared below once the post succeeded
        content = None
        mentions = AllowedMentions()
        if poll.ping_role_enabled and poll.ping_role_id is not None:
            content = f"<@&{poll.ping_role_id}> Vote now!"
            mentions = AllowedMentions(roles=(poll.ping_role_id,))
        try:
            image = self._image_of(poll)
            if poll.image_message_text or image is not None:
                # Upstream's order: the image (with its text) first, then the poll.
                text = poll.image_message_text[:2000] if poll.image_message_text else None
                await self._gateway.send_message(poll.channel_id, content=text, attachment=image)
            # The message goes out bare, its id is stored, and only then come the reactions users
            # click: a vote can never arrive for a message the database does not know yet.
            posted = await self._gateway.post_poll_message(
                poll.channel_id,
                embed=poll_embed(poll, {}, closed=False, voters=0),
                emojis=(),
                content=content,
                allowed_mentions=mentions,
            )
        except RateLimitedError as err:
            self._hold(poll.channel_id, err)
            return
        except (NotFoundError, ForbiddenError) as err:
            self.stats.open_failures += 1
            first = self._open_failed_since.setdefault(poll.id, now)
            if now - first >= self._orphan_after:
                await self._orphan(poll, f"cannot post in channel {poll.channel_id}: {type(err).__name__}")
            else:
                logger.warning("poll %s: cannot post (%s); retried with backoff", poll.id, err)
            return
        except GatewayError as err:
            if not is_permanent(err):
                raise
            # Discord will refuse this message every time: the poll can never be posted.
            self._refused(poll.id, "its poll message", err)
            await self._orphan(poll, f"Discord refused its poll message: {err}")
            return
        self._open_failed_since.pop(poll.id, None)
        self._retry_post.pop(poll.id, None)
        if await self._store.finish_open(poll.id, token, posted.message_id):
            self.stats.opened += 1
            self._remember(poll.id, poll.channel_id)
            logger.info("poll %s opened as message %s", poll.id, posted.message_id)
            await self._add_reactions(poll, posted.message_id)
        else:
            self.stats.late_claims += 1
            logger.error(
                "poll %s: message %s was posted after the %ss claim lease ran out; another replica took over",
                poll.id, posted.message_id, int(self._lease.total_seconds()),
            )  # fmt: skip

    def _reactable(self, poll: PollView) -> tuple[str, ...]:
        """The poll's emojis Discord can take: the first 20 (said once for a poll with more)."""
        if len(poll.emojis) > MAX_REACTIONS_PER_MESSAGE and poll.id not in self._permanent:
            self._refused(
                poll.id,
                f"reactions for options {MAX_REACTIONS_PER_MESSAGE + 1}..{len(poll.emojis)}",
                GatewayError(
                    f"the poll has {len(poll.emojis)} options and Discord allows "
                    f"{MAX_REACTIONS_PER_MESSAGE} reactions per message; only the first "
                    f"{MAX_REACTIONS_PER_MESSAGE} get one"
                ),
            )
        return poll.emojis[:MAX_REACTIONS_PER_MESSAGE]

    async def _add_reactions(self, poll: PollView, message_id: int) -> None:
        """Add the poll's reactions in order; what fails transiently is added on a later tick."""
        for emoji in self._reactable(poll):
            try:
                await self._gateway.add_reaction(poll.channel_id, message_id, emoji)
            except RateLimitedError as err:
                self._hold(poll.channel_id, err)
                self._needs_reactions[poll.id] = None
                return
            except GatewayError as err:
                if is_permanent(err):
                    self._refused(poll.id, f"reaction {emoji}", err)
                    continue
                logger.info("poll %s: reaction %s not added yet (%s)", poll.id, emoji, type(err).__name__)
                self._needs_reactions[poll.id] = None
                return

    async def _ensure_reactions(self) -> None:
        """Complete the reactions of polls whose posting stopped half-way (bounded: those polls only)."""
        for poll_id in list(self._needs_reactions):
            view = await self._safe_view(poll_id)
            if view is None or view.status != "active" or view.message_id is None:
                self._needs_reactions.pop(poll_id, None)
                continue
            if self._held(view.channel_id):
                continue
            try:
                await self._adopt(view, refresh=False)
            except NotFoundError:
                pass  # the message is gone: the reconciler decides what that means
            except RateLimitedError as err:
                self._hold(view.channel_id, err)
                continue
            except GatewayError as err:
                if not is_permanent(err):
                    continue  # transient: next tick
                self._refused(poll_id, "a reaction", err)
            self._needs_reactions.pop(poll_id, None)

    async def _orphan(self, poll: PollView, reason: str) -> None:
        if await self._store.close(poll.id):
            self.stats.orphaned += 1
            self._won(poll.id, "active->closed")
            self._open_failed_since.pop(poll.id, None)
            self._known_active.pop(poll.id, None)
            logger.warning("poll %s closed as orphaned (votes kept): %s", poll.id, reason)

    async def orphan(self, poll_id: int, reason: str) -> None:
        """Close a poll whose message is gone for good; its votes are kept (the reconciler calls this)."""
        poll = await self._store.view(poll_id)
        if poll is not None and poll.status == "active":
            await self._orphan(poll, reason)

    async def close_poll(self, poll_id: int, *, reason: str) -> bool:
        """Close an active poll now, as its close time would; ``True`` if this call closed it."""
        return await self._close_one(poll_id, reason=reason)

    async def _close_one(self, poll_id: int, *, reason: str) -> bool:
        before = await self._safe_view(poll_id)
        if before is not None and self._held(before.channel_id):
            return False  # closed on a later tick, once the channel's retry-after has passed
        if not await self._store.close(poll_id):
            return False
        self.stats.closed += 1
        self._won(poll_id, "active->closed")
        self._known_active.pop(poll_id, None)
        poll = await self._store.view(poll_id)
        if poll is not None:
            logger.info("poll %s closed: %s", poll_id, reason)
            await self.finalize(poll, ping=True)
        return True

    async def finalize(self, poll: PollView, *, ping: bool, unless_done: bool = False) -> None:
        """Show the final results and clear the reactions (see :meth:`Finalizer.finalize`)."""
        await self.finals.finalize(poll, ping=ping, unless_done=unless_done)

    def _remember(self, poll_id: int, channel_id: int) -> None:
        if poll_id in self._known_active or len(self._known_active) < self._max_known:
            self._known_active[poll_id] = channel_id

    async def _follow_external_changes(self) -> None:
        """Adopt active polls opened elsewhere; finalize known polls that were closed elsewhere."""
        from polly.db.models import Poll

        current: dict[int, PollView] = {}
        async for view in self._store.views(
            Poll.status == "active", Poll.message_id.is_not(None), limit=self._max_known
        ):
            if view.message_id is not None:
                current[view.id] = view
        if not self._following:
            # First pass after start: what is active now is simply followed. Its message already
            # exists; votes missed while down are the reconciler's job, within its budget.
            for poll_id, view in current.items():
                self._remember(poll_id, view.channel_id)
            self._following = True
            return
        for poll_id in [p for p in self._known_active if p not in current]:
            self._known_active.pop(poll_id, None)
            gone = await self._safe_view(poll_id)
            if gone is not None and gone.status == "closed":
                self.stats.finalized_external += 1
                await self._guarded(poll_id, self.finalize(gone, ping=True, unless_done=True))
        for poll_id, view in current.items():
            if poll_id not in self._known_active:
                self._remember(poll_id, view.channel_id)
                self.stats.adopted += 1
                await self._guarded(poll_id, self._adopt(view))

    async def _safe_view(self, poll_id: int) -> PollView | None:
        try:
            return await self._store.view(poll_id)
        except CorruptPollError as err:
            logger.warning("poll %s left alone: %s", poll_id, err)
            return None

    async def _adopt(self, poll: PollView, *, refresh: bool = True) -> None:
        """A poll that became active elsewhere (another replica, a reopen): refresh its embed and make
        sure its reactions exist."""
        assert poll.message_id is not None
        if refresh and self._on_results_changed is not None:
            self._on_results_changed(poll.id)
        message = await self._gateway.fetch_message(poll.channel_id, poll.message_id)
        present = {r.emoji for r in message.reactions if r.me}
        for emoji in self._reactable(poll):
            if emoji not in present:
                try:
                    await self._gateway.add_reaction(poll.channel_id, poll.message_id, emoji)
                except GatewayError as err:
                    if not is_permanent(err):
                        raise
                    self._refused(poll.id, f"reaction {emoji}", err)

    @property
    def known_active(self) -> int:
        """Active polls this scheduler is following."""
        return len(self._known_active)
