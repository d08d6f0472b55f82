"""polly's data layer: upstream's schema (:mod:`.models`), pooled engines and scoped sessions
(:mod:`.engine`), schema check and upgrade (:mod:`.schema`), tolerant bulk readers (:mod:`.queries`)."""

from polly.db.current import configure_database, dispose_database, dispose_database_sync, get_database
from polly.db.engine import Database
from polly.db.models import (
    POLL_EMOJIS,
    Base,
    Channel,
    Guild,
    Poll,
    SchemaMigration,
    TypeSafeColumn,
    User,
    UserPreference,
    Vote,
    get_poll_emoji,
)

__all__ = [
    "POLL_EMOJIS",
    "Base",
    "Channel",
    "Database",
    "Guild",
    "Poll",
    "SchemaMigration",
    "TypeSafeColumn",
    "User",
    "UserPreference",
    "Vote",
    "configure_database",
    "dispose_database",
    "dispose_database_sync",
    "get_database",
    "get_poll_emoji",
]
