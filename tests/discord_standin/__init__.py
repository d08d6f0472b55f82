"""A loopback Discord for tests: REST API v10 and the gateway websocket, shaped by discord.py's own
parsing (not by polly's code), on aiohttp. Test support only: it is not part of the wheel."""

from tests.discord_standin.server import DEFAULT_TOKEN, DiscordStandin, reaction_key

__all__ = ["DEFAULT_TOKEN", "DiscordStandin", "reaction_key"]
