"""The poll embed: question, options with their emojis, results when they may be shown.

Results of an anonymous poll stay hidden until it closes (upstream's rule); a closed poll always
shows them and names the winner(s). Text is cut to Discord's limits rather than failing a post.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from polly.db.poll_rows import PollView
from polly.engine.gateway import (
    MAX_DESCRIPTION_CHARS,
    MAX_FIELD_VALUE_CHARS,
    MAX_TITLE_CHARS,
    Embed,
    EmbedField,
)

COLOUR_ACTIVE = 0x00BFA5
COLOUR_CLOSED = 0xE53935
COLOUR_SCHEDULED = 0xFFB300
_BAR_WIDTH = 12


def _cut(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"


def _bar(count: int, total: int) -> str:
    filled = round(_BAR_WIDTH * count / total) if total else 0
    return "█" * filled + "░" * (_BAR_WIDTH - filled)


def poll_embed(poll: PollView, results: Mapping[int, int], *, closed: bool, voters: int) -> Embed:
    """The embed for ``poll``. ``results`` maps option index to votes; ``voters`` is distinct users."""
    show = closed or not poll.anonymous
    total = sum(results.values())
    top = max(results.values(), default=0)
    lines: list[str] = []
    for index, (emoji, option) in enumerate(zip(poll.emojis, poll.options, strict=False)):
        line = f"{emoji} {option}"
        if show:
            count = results.get(index, 0)
            share = f"{100 * count / total:.0f}%" if total else "0%"
            crown = " 🏆" if closed and top and count == top else ""
            line += f"\n`{_bar(count, total)}` {count} ({share}){crown}"
        lines.append(line)
    rules = []
    if poll.multiple_choice:
        rules.append(f"choose up to {poll.max_choices}" if poll.max_choices else "choose any number")
    else:
        rules.append("choose one")
    if poll.anonymous:
        rules.append("anonymous: results when the poll closes" if not closed else "anonymous")
    state = "Closed" if closed else "Open"
    closes = poll.close_time.replace(tzinfo=UTC)
    fields = [
        EmbedField("Status", f"{state} · {voters} voter{'s' if voters != 1 else ''}", inline=True),
        EmbedField("Closes" if not closed else "Closed", f"<t:{int(closes.timestamp())}:f>", inline=True),
    ]
    return Embed(
        title=_cut(f"📊 {poll.name}", MAX_TITLE_CHARS),
        description=_cut(f"**{poll.question}**\n\n" + "\n\n".join(lines), MAX_DESCRIPTION_CHARS),
        fields=tuple(EmbedField(f.name, _cut(f.value, MAX_FIELD_VALUE_CHARS), f.inline) for f in fields),
        colour=COLOUR_CLOSED if closed else COLOUR_ACTIVE,
        footer=" · ".join(rules),
        timestamp=datetime.now(UTC) if closed else None,
    )


def results_message(poll: PollView, results: Mapping[int, int]) -> str:
    """The plain-text results announced with a role ping when a poll closes."""
    top = max(results.values(), default=0)
    winners = [poll.options[i] for i, n in results.items() if top and n == top and i < len(poll.options)]
    head = f"📊 **{poll.name}** has closed."
    if not winners:
        return f"{head} No votes were cast."
    return _cut(f"{head} Winner: {', '.join(winners)} ({top} vote{'s' if top != 1 else ''}).", 1900)
