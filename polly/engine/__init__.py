"""The poll engine: the Discord gateway protocol, its adapters and the engine built on them."""

from polly.engine.gateway import (
    NO_MENTIONS,
    AllowedMentions,
    Embed,
    EmbedField,
    FetchedMessage,
    Gateway,
    PostedMessage,
    ReactionCount,
    ReactionEvent,
    ReactionEventQueue,
    ReactionQueueStats,
    ReactionUser,
)

__all__ = [
    "NO_MENTIONS",
    "AllowedMentions",
    "Embed",
    "EmbedField",
    "FetchedMessage",
    "Gateway",
    "PostedMessage",
    "ReactionCount",
    "ReactionEvent",
    "ReactionEventQueue",
    "ReactionQueueStats",
    "ReactionUser",
]
