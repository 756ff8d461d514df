"""Telegram Desktop export connector (``telegram:PATH``): ``result.json`` of one chat or of all chats.

Messages are streamed from ``messages`` (single-chat export) or
``chats.list[].messages`` / ``left_chats.list[].messages`` (full export)
without loading the file. Rich text (lists of entities) is flattened, service
messages ("X joined", "pinned") are kept as system events, photos and files
become media references, and ``reply_to_message_id`` / ``edited`` are kept in
attrs. ``date_unixtime`` gives UTC; older exports only have a local ``date``,
whose zone ``?tz=`` states (UTC otherwise). PATH is a .json file or a folder
of exports. Reads only.
"""
from __future__ import annotations

import json
from datetime import tzinfo
from pathlib import Path
from typing import Iterator

from memtape.connectors.base import Record, register
from memtape.connectors.sources._common import (
    RecordError,
    check_text,
    dead_letter,
    each_file,
    from_epoch,
    limits,
    open_binary,
    parse_iso,
    split_options,
    zone,
)
from memtape.connectors.sources._jsonstream import JsonItems
from memtape.schemas.records import RawEvent

_SCHEME = "telegram"
_MESSAGE_PATHS = [("messages", "*"), ("chats", "list", "*", "messages", "*"), ("left_chats", "list", "*", "messages", "*")]
_MEDIA_KEYS = ("photo", "file", "thumbnail")


def flatten_text(value: object) -> str:
    """Telegram text is a string or a list of strings and ``{"type", "text"}`` entities."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(part if isinstance(part, str) else str(part.get("text", "")) if isinstance(part, dict) else ""
                       for part in value)
    return ""


def _placeholder(obj: dict) -> str:
    """Text for a message that is only a poll, a location or a contact."""
    poll = obj.get("poll")
    if isinstance(poll, dict) and poll.get("question"):
        return f"[poll] {poll['question']}"
    for key, label in (("location_information", "[location]"), ("contact_information", "[contact]")):
        if key in obj:
            return label
    raise RecordError("message has neither text nor media")


def _message(obj: object, chat: dict, index: str, file: Path, tenant: str, local_zone: tzinfo,
             max_bytes: int) -> RawEvent:
    if not isinstance(obj, dict):
        raise RecordError("message is not a JSON object")
    if "date_unixtime" in obj:
        when = from_epoch(obj["date_unixtime"])
    else:
        when = parse_iso(obj.get("date"), local_zone)
    service = obj.get("type") == "service"
    text = flatten_text(obj.get("text"))
    if service and not text:
        text = " ".join(str(p) for p in (obj.get("actor"), obj.get("action"), obj.get("title")) if p)
    media_ref = next((str(obj[k]) for k in _MEDIA_KEYS if isinstance(obj.get(k), str)), None)
    if not text and media_ref is None:
        text = _placeholder(obj)
    chat_key = str(chat.get("id") or chat.get("name") or file.stem)
    attrs = {
        key: value
        for key, value in (
            ("subtype", "service" if service else None),
            ("reply_to", obj.get("reply_to_message_id")),
            ("edited", obj.get("edited_unixtime") or obj.get("edited")),
            ("media_type", obj.get("media_type")),
            ("forwarded_from", obj.get("forwarded_from")),
            ("from_id", obj.get("from_id") or obj.get("actor_id")),
            ("chat_name", chat.get("name")),
        )
        if value is not None
    }
    sender = obj.get("from") if not service else obj.get("actor")
    return RawEvent(
        tenant=tenant,
        source_kind="im",
        source=_SCHEME,
        source_id=f"{chat_key}:{obj.get('id', index)}",
        text=check_text(text, max_bytes),
        event_time=when,
        conversation_id=chat_key,
        sender=str(sender) if sender is not None else None,
        media_ref=media_ref,
        payload=json.dumps(obj, ensure_ascii=False),
        attrs=attrs,
    )


@register(_SCHEME, "im", "Telegram Desktop JSON export (result.json), one chat or all chats")
def read_telegram(path: str, tenant: str) -> Iterator[Record]:
    path, options = split_options(path)
    conf = limits()
    local_zone = zone(options.get("tz"))

    def read_file(file: Path) -> Iterator[Record]:
        with open_binary(file) as handle:
            items = JsonItems(handle, _MESSAGE_PATHS, conf.max_message_bytes)
            broken = False
            for item in items:
                position = f"{file}#{item.position}"
                if item.error is not None:
                    broken = True
                    yield dead_letter(tenant, _SCHEME, position, item.error, item.raw)
                    continue
                try:
                    yield _message(item.value, items.context, item.position, file, tenant, local_zone,
                                   conf.max_message_bytes)
                except Exception as exc:  # one bad message must not stop the export
                    yield dead_letter(tenant, _SCHEME, position, exc, repr(item.value)[:1024])
            if items.items == 0 and not broken:
                yield dead_letter(tenant, _SCHEME, str(file), RecordError("no Telegram messages in this JSON file"))

    yield from each_file(path, tenant, _SCHEME, read_file, accept={".json"})
