"""What a poll message's reactions mean, per poll kind, and the events that make the votes match.

The repair reads a message's reactions (every emoji of the poll, every page of users) and turns
them into ordinary reaction events for :class:`~polly.engine.votes.VoteProcessor`, so the vote
rules stay in one place (:mod:`polly.engine.vote_batch`):

=============================== ================================ ====================================
poll kind                       a user's visible reaction means  after a complete read
=============================== ================================ ====================================
multiple choice, not anonymous  the user's current choice        votes = the reactions held (up to
(reactions are kept)                                             ``max_choices``, lowest options
                                                                 first); a vote without a reaction
                                                                 is removed
single choice (anonymous or     a choice not yet recorded (the   the vote becomes that option (a
not; the bot removes reactions) bot removes recorded ones)       change of mind); no reaction
                                                                 changes nothing; the reaction is
                                                                 then removed
multiple choice, anonymous      an addition not yet recorded     that option is added (within
(the bot removes reactions)                                      ``max_choices``); nothing is ever
                                                                 removed; the reaction is removed
                                                                 (the reconciler also replays every
                                                                 add its queue shed: a removal
                                                                 never un-votes here)
=============================== ================================ ====================================

A single-choice user showing several unrecorded reactions gets the last of them in the poll's
option order (Discord does not say which came last); all are removed. Where this replica shed the
user's latest add, newer than the recorded vote, it knows which came last: that add is applied as
it was taken in, and the visible reactions (all older) are removed. A change of mind over a
recorded vote is applied only once the same reaction has been seen, with the same recorded vote,
on reads ``confirm_seconds`` apart (10 s): a reaction whose removal another replica is still
retrying is gone by then. The reconciler passes that rule only where this replica may have missed
the act; where it received every event since the vote was recorded, its ``is_leftover`` calls the
reaction a leftover (a newer choice would have arrived as an event).
A reaction whose removal the bot failed and has not yet confirmed
(:meth:`ReactionRemover.is_leftover`) is a leftover, not a choice: it is removed and changes
nothing. Votes are only removed from a complete read; an
incomplete one (budget spent, a failed page) only adds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime

from polly.db.poll_rows import PollView
from polly.engine.gateway import ReactionEvent

#: user id → option indexes
Choices = Mapping[int, set[int]]


def repair_events(
    poll: PollView,
    held: Choices,
    recorded: Choices,
    *,
    complete: bool,
    is_leftover: Callable[[int, int, str], bool],
    read_at: datetime | None = None,
    confirmed: Callable[[int, int, str, frozenset[int]], bool] = lambda _m, _u, _e, _h: True,
    shed_adds: Mapping[int, tuple[int, datetime]] | None = None,
) -> tuple[list[ReactionEvent], list[tuple[int, str]]]:
    """The events that make ``recorded`` match ``held``, and the (user, emoji) leftovers to remove.

    ``held``: the reactions read (user → options); ``recorded``: the votes in the database;
    ``read_at`` (naive UTC): when the reactions were read, the events' time, so a user's act after
    the read is newer than the repair's vote. ``confirmed(message, user, emoji, votes)`` says
    whether a single-choice change of mind (a visible reaction for another option than the recorded
    vote) has been seen long enough to be one; an unconfirmed one is left for a later read.
    ``shed_adds`` (user → option, when taken in): on a single-choice poll, the latest add this
    replica shed for a user, newer than the recorded vote: that event is applied as it was (the
    user's vote whatever the message shows now) and every visible reaction of the user is older, a
    leftover.
    """
    assert poll.message_id is not None
    events: list[ReactionEvent] = []
    leftovers: list[tuple[int, str]] = []

    def event(kind: str, user: int, option: int, at: datetime | None = read_at) -> ReactionEvent:
        return ReactionEvent(
            "add" if kind == "add" else "remove", poll.server_id, poll.channel_id, poll.message_id or 0,
            user, poll.emojis[option], is_bot=False, received_at=at,
        )  # fmt: skip

    keeps = not poll.removes_reactions
    shed = shed_adds if shed_adds is not None and not poll.multiple_choice else {}
    for user in sorted(set(held) | set(shed) | (set(recorded) if keeps and complete else set())):
        have, shows = recorded.get(user, set()), held.get(user, set())
        if user in shed:
            option, at = shed[user]
            leftovers.extend((user, poll.emojis[o]) for o in sorted(shows))
            events.append(event("add", user, option, at))
            continue
        if keeps:
            if complete:
                events.extend(event("remove", user, o) for o in sorted(have - shows))
            events.extend(event("add", user, o) for o in sorted(shows - have))
            continue
        fresh = []
        for option in sorted(shows):
            if is_leftover(poll.message_id, user, poll.emojis[option]):
                leftovers.append((user, poll.emojis[option]))
            else:
                fresh.append(option)
        if not poll.multiple_choice:
            changes = [o for o in fresh if o not in have]
            if (
                have
                and changes
                and not all(
                    confirmed(poll.message_id, user, poll.emojis[o], frozenset(have)) for o in changes
                )
            ):
                fresh = [o for o in fresh if o in have]
            # The recorded option first, so that another visible option is the one that wins.
            fresh.sort(key=lambda o: (o not in have, o))
        events.extend(event("add", user, o) for o in fresh)
    return events, leftovers
