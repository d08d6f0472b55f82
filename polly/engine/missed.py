"""What a replica may have missed: since when it has received every event, and per message what
it lost since then (a batch given up, a full queue's shed, whose and when).

The reconciler asks it two questions. :meth:`Missed.may_have_missed`: could an event of this user
on this message, newer than their recorded vote, have passed this replica by? If not, a reaction
for another option is older than the vote (a leftover). :meth:`Missed.newest_shed_adds`,
:meth:`Missed.shed_additions` and :meth:`Missed.shed_events`: the events a full queue shed, kept per
user (:class:`ShedActs`), which a repair applies as the events they were.

Bounded: lost times for ``max_messages`` messages and shed acts of ``max_users`` (message, user)
pairs, each for an hour; a message pushed out of the shed record counts as lost for everyone from
its latest shed on, which errs towards taking a reaction for a change of mind, never towards
dropping one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from cachetools import TTLCache

from polly.db.poll_rows import PollView
from polly.engine.gateway import ReactionEvent, ShedActs

__all__ = ["Missed"]


class _LostActs(TTLCache[int, dict[int, ShedActs]]):
    """Per message, its users' shed events, ``maxsize`` users in all, for an hour; a message pushed
    out for room is handed to ``on_evict`` (which counts it as lost for everyone)."""

    def __init__(
        self, maxsize: int, timer: Callable[[], float],
        on_evict: Callable[[int, Mapping[int, ShedActs]], None],
    ) -> None:  # fmt: skip
        super().__init__(maxsize=maxsize, ttl=3600.0, timer=timer, getsizeof=len)
        self._on_evict = on_evict

    def popitem(self) -> tuple[int, dict[int, ShedActs]]:
        key, value = super().popitem()
        self._on_evict(key, value)
        return key, value


class Missed:
    """See the module docstring. ``clock``: naive UTC now; ``monotonic``: the caches' timer."""

    def __init__(
        self, clock: Callable[[], datetime], monotonic: Callable[[], float], *, max_messages: int,
        max_users: int,
    ) -> None:  # fmt: skip
        self._clock = clock
        # Since when this replica has received every event (the first cover_all, at start-up, leaves
        # the construction time: the gateway connects later, so this errs towards "received"), and
        # per message the latest time some of its events were lost (shed, failed) since then.
        self._created = clock()
        self._covered_since: datetime | None = None
        self._lost_at: TTLCache[int, datetime] = TTLCache(maxsize=max_messages, ttl=3600.0, timer=monotonic)
        self._lost_acts = _LostActs(max_users, monotonic, self._lost_for_everyone)

    def lost(self, message_id: int) -> None:
        """Some events of ``message_id`` were lost now, whose is unknown."""
        self._lost_at[message_id] = self._clock()

    def all_lost(self) -> None:
        """Any event up to now may have been missed (start-up after downtime, an unknown shed)."""
        self._covered_since = self._created if self._covered_since is None else self._clock()

    def shed(self, message_id: int, users: Mapping[int, ShedActs]) -> None:
        """A full queue shed these users' events of ``message_id``."""
        known = self._lost_acts.get(message_id, {})
        merged = {**known, **{u: a.merged(known.get(u)) for u, a in users.items()}}
        if len(merged) > self._lost_acts.maxsize:
            self._lost_for_everyone(message_id, merged)
        else:
            self._lost_acts[message_id] = merged  # a new dict: the cache counts its users

    def _lost_for_everyone(self, message_id: int, users: Mapping[int, ShedActs]) -> None:
        """No room to say whose events ``message_id`` lost: from its latest shed on, anyone's."""
        at = max(a.at for a in users.values())
        self._lost_at[message_id] = max(at, self._lost_at.get(message_id, at))
        self._lost_acts.pop(message_id, None)

    def may_have_missed(self, message_id: int, since: datetime, user_id: int) -> bool:
        """Whether this replica may have missed an add of ``message_id`` by ``user_id`` taken in
        after ``since``: it was not yet listening then (or has lost track of which messages it missed
        since), it lost some of that message's events later without knowing whose, or it shed one of
        that user's adds taken in later."""
        covered = self._covered_since
        if covered is None or since <= covered:
            return True
        lost = self._lost_at.get(message_id)
        if lost is not None and since <= lost:
            return True
        acts = self._lost_acts.get(message_id, {}).get(user_id)
        return acts is not None and acts.last_add_at is not None and since <= acts.last_add_at

    def newest_shed_adds(
        self, message_id: int, voted_at: Mapping[int, datetime]
    ) -> dict[int, tuple[str, datetime]]:
        """Per user, the latest add this replica shed on ``message_id`` when it is newer than the
        user's recorded vote (``voted_at``; none recorded counts as older): on a single-choice poll
        that add is the user's vote, seen or not on the message."""
        newest = {}
        for user_id, acts in self._lost_acts.get(message_id, {}).items():
            if acts.last_add is None or acts.last_add_at is None:
                continue
            when = voted_at.get(user_id)
            if when is None or acts.last_add_at > when:
                newest[user_id] = (acts.last_add, acts.last_add_at)
        return newest

    def shed_additions(self, poll: PollView, recorded: Mapping[int, set[int]]) -> list[ReactionEvent]:
        """On an anonymous multiple-choice poll, the adds this replica shed of options the user has
        no vote for, in the order they were taken in: there every add is a vote, since a removal
        never un-votes (the bot's own removals echo back as removals), so a shed add counts whether
        or not its reaction is still on the message. A user gets no more than ``max_choices`` leaves
        room for, the first taken in (the vote rules would refuse the rest and remove a reaction
        that may be long gone, at every repair)."""
        message = poll.message_id
        if message is None or not (poll.multiple_choice and poll.anonymous):
            return []
        adds = []
        for user, shed in self._lost_acts.get(message, {}).items():
            have = recorded.get(user, set())
            mine = [(at, user, emoji) for emoji, at in shed.adds
                    if (option := poll.option_for(emoji)) is not None and option not in have]  # fmt: skip
            room = len(mine) if poll.max_choices is None else max(0, poll.max_choices - len(have))
            adds += sorted(mine)[:room]  # the first taken in: as the vote rules would have taken them
        return [
            ReactionEvent("add", poll.server_id, poll.channel_id, message, user, emoji, is_bot=False,
                          received_at=at)
            for at, user, emoji in sorted(adds)
        ]  # fmt: skip

    def shed_events(
        self, poll: PollView, voted_at: Mapping[int, datetime], recorded: Mapping[int, set[int]]
    ) -> list[ReactionEvent]:
        """What this replica shed of ``poll``, as the events they were: on a single-choice poll each
        user's latest add newer than the vote, on an anonymous multiple-choice one every shed add of
        an option not recorded (:meth:`shed_additions`), on another multiple-choice one each user's
        latest act per emoji, in the order they were taken in (the vote rules skip what a newer
        vote decided)."""
        message = poll.message_id
        if message is None:
            return []

        def event(user: int, kind: str, emoji: str, at: datetime) -> ReactionEvent:
            return ReactionEvent("add" if kind == "add" else "remove", poll.server_id, poll.channel_id,
                                 message, user, emoji, is_bot=False, received_at=at)  # fmt: skip

        if poll.multiple_choice and poll.anonymous:
            return self.shed_additions(poll, recorded)
        if poll.multiple_choice:
            acts = [(at, user, kind, emoji) for user, shed in self._lost_acts.get(message, {}).items()
                    for emoji, kind, at in shed.acts]  # fmt: skip
            events = [event(user, kind, emoji, at) for at, user, kind, emoji in sorted(acts)]
        else:
            newest = self.newest_shed_adds(message, voted_at)
            events = [event(user, "add", emoji, at) for user, (emoji, at) in newest.items()]
        return [e for e in events if poll.option_for(e.emoji) is not None]
