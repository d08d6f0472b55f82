"""The poll form and the image upload: what a browser sends, turned into upstream's import format so
:func:`polly.polls.definition.validate_poll` checks it with the same rules and messages as
``polly poll create``; and the image, checked by size and by its bytes (not its name), stored under
``engine.image_root`` where the engine reads ``image_path``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from polly.db.models import POLL_EMOJIS

MAX_OPTIONS = 10
UPLOAD_DIR = "static/uploads"  # upstream's, relative to the image root
#: Leading bytes of the image types accepted, and the extension each is stored with.
IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)


class UploadError(ValueError):
    """An upload refused; the message names what was wrong and what is allowed."""


def poll_data(form: Any, server_id: str) -> dict[str, Any]:
    """The form as one poll object of the import format (blank options dropped; a blank emoji is
    the default letter of its position, as upstream fills it)."""
    options: list[str] = []
    emojis: list[str] = []
    for i in range(MAX_OPTIONS):
        option = str(form.get(f"option_{i}") or "").strip()
        if not option:
            continue
        emoji = str(form.get(f"emoji_{i}") or "").strip()
        options.append(option)
        emojis.append(emoji or POLL_EMOJIS[len(emojis)])
    data: dict[str, Any] = {
        "name": str(form.get("name") or ""),
        "question": str(form.get("question") or ""),
        "options": options,
        "emojis": emojis,
        "server_id": server_id,
        "channel_id": str(form.get("channel_id") or ""),
        "timezone": str(form.get("timezone") or ""),
        "open_time": str(form.get("open_time") or ""),
        "close_time": str(form.get("close_time") or ""),
        "image_message_text": str(form.get("image_message_text") or ""),
    }
    for flag in (
        "multiple_choice",
        "anonymous",
        "ping_role_enabled",
        "ping_role_on_close",
        "open_immediately",
    ):
        data[flag] = form.get(flag) == "on"
    if data["ping_role_enabled"] or data["ping_role_on_close"]:
        data["ping_role_id"] = str(form.get("ping_role_id") or "")
    raw_max = str(form.get("max_choices") or "").strip()
    if data["multiple_choice"] and raw_max:
        data["max_choices"] = int(raw_max) if raw_max.isdigit() else raw_max
    return data


def image_kind(head: bytes) -> str | None:
    """The stored extension for these leading bytes, ``None`` when not an accepted image."""
    for signature, ext in IMAGE_SIGNATURES:
        if head.startswith(signature):
            return ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


async def store_image(upload: Any, image_root: Path, max_bytes: int) -> str | None:
    """Check and store an uploaded image; returns its ``image_path`` (relative to ``image_root``),
    ``None`` when no file was chosen. Reads at most ``max_bytes + 1`` bytes."""
    if upload is None or isinstance(upload, str) or not getattr(upload, "filename", ""):
        return None
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        msg = f"image: larger than {max_bytes:,} bytes; the limit is {max_bytes:,} (web.upload_max_bytes)"
        raise UploadError(msg)
    kind = image_kind(data[:16])
    if kind is None:
        msg = "image: not a PNG, JPEG, GIF or WebP image (checked by its content, not its name)"
        raise UploadError(msg)
    relative = f"{UPLOAD_DIR}/{uuid.uuid4().hex}.{kind}"
    target = image_root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return relative


def form_from_poll(data: dict[str, Any]) -> dict[str, str]:
    """A poll in the import format (as exported) as the form's fields, to edit it."""
    form = {
        k: str(data.get(k) or "")
        for k in (
            "name",
            "question",
            "channel_id",
            "timezone",
            "open_time",
            "close_time",
            "image_message_text",
            "ping_role_id",
        )
    }
    for i, (option, emoji) in enumerate(zip(data.get("options", []), data.get("emojis", []), strict=False)):
        form[f"option_{i}"], form[f"emoji_{i}"] = str(option), str(emoji)
    for flag in (
        "multiple_choice",
        "anonymous",
        "ping_role_enabled",
        "ping_role_on_close",
        "open_immediately",
    ):
        if data.get(flag):
            form[flag] = "on"
    if data.get("max_choices"):
        form["max_choices"] = str(data["max_choices"])
    return form
