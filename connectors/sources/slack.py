"""Slack workspace export connector (``slack:PATH``): the zip Slack mails you, or its unpacked folder.

``users.json`` names the people, ``channels.json`` / ``groups.json`` /
``dms.json`` / ``mpims.json`` name the conversations and their members, and
each ``<channel>/<YYYY-MM-DD>.json`` day file is streamed message by
message. Threads become conversations (``channel:thread_ts``), edits keep the
edited text with ``attrs.edited``, ``message_changed`` events replace the
original (same source id), shared files become media references, and bot
messages fall back to their attachments' text. Mention and link markup is
made readable; the original is kept in the payload. Reads only.
"""
from __future__ import annotations

import html
import json
import re
from typing import Iterator

from memtape.connectors.base import Record, register
from memtape.connectors.sources._archive import Export
from memtape.connectors.sources._common import (
    RecordError,
    check_text,
    dead_letter,
    from_epoch,
    limits,
    split_options,
)
from memtape.connectors.sources._jsonstream import JsonItems
from memtape.schemas.records import RawEvent

_SCHEME = "slack"
_CONVERSATION_FILES = ("channels.json", "groups.json", "dms.json", "mpims.json")
_MARKUP = re.compile(r"<([@#!])?([^<>|]+)(?:\|([^<>]*))?>")
_SKIPPED_SUBTYPES = {"message_deleted"}


def _list_items(export: Export, name: str, tenant: str, letters: list[Record]) -> Iterator[object]:
    """The items of a metadata file's top-level list, streamed, so a file of millions of tiny nested lists costs
    one item's memory, not the whole document's objects; a bad item becomes a letter."""
    with export.open(name) as handle:
        for item in JsonItems(handle, [("*",)], export.limits.max_message_bytes):
            if item.error is not None:
                letters.append(dead_letter(tenant, _SCHEME, f"{export.position(name)}#{item.position}", item.error))
            else:
                yield item.value


def _directory(export: Export, tenant: str) -> tuple[dict[str, str], dict[str, list[str]], list[Record]]:
    """User names by id, member ids by conversation folder, and letters for unreadable metadata."""
    users: dict[str, str] = {}
    members: dict[str, list[str]] = {}
    letters: list[Record] = []
    names = set(export.names())
    if "users.json" in names:
        try:
            for user in _list_items(export, "users.json", tenant, letters):
                if isinstance(user, dict) and user.get("id"):
                    profile: dict = user["profile"] if isinstance(user.get("profile"), dict) else {}
                    users[user["id"]] = user.get("real_name") or profile.get("real_name") or user.get("name") or user["id"]
        except Exception as exc:  # without names, ids still identify senders
            letters.append(dead_letter(tenant, _SCHEME, export.position("users.json"), exc))
    for meta in _CONVERSATION_FILES:
        if meta not in names:
            continue
        try:
            for conv in _list_items(export, meta, tenant, letters):
                if isinstance(conv, dict):
                    folder = conv.get("name") or conv.get("id")
                    members[str(folder)] = [str(m) for m in conv.get("members") or []]
        except Exception as exc:  # without members, recipients stay empty
            letters.append(dead_letter(tenant, _SCHEME, export.position(meta), exc))
    return users, members, letters


def readable(text: str, users: dict[str, str]) -> str:
    """Slack markup to plain text: ``<@U1>`` -> ``@Ann``, ``<url|label>`` -> ``label``, entities unescaped."""

    def swap(match: re.Match) -> str:
        sigil, target, label = match.groups()
        if sigil == "@":
            return "@" + (label or users.get(target, target))
        if sigil == "#":
            return "#" + (label or target)
        if sigil == "!":
            return "@" + (label or target.split("^")[0])
        return label or target

    return html.unescape(_MARKUP.sub(swap, text))


def _files(obj: dict) -> list[dict]:
    files: list = obj["files"] if isinstance(obj.get("files"), list) else [obj["file"]] if isinstance(obj.get("file"), dict) else []
    return [f for f in files if isinstance(f, dict)]


def _fallback_text(obj: dict, files: list[dict]) -> str:
    """Text for a message whose own text is empty: its attachments' text, else its files' titles."""
    parts: list[str] = []
    for att in obj.get("attachments") or []:
        if isinstance(att, dict):
            parts += [str(att[k]) for k in ("pretext", "title", "text") if att.get(k)] or [str(att.get("fallback") or "")]
    parts += [str(f.get("title") or f.get("name") or "") for f in files]
    return "\n".join(p for p in parts if p)


def _message(obj: object, channel: str, users: dict[str, str], members: list[str], tenant: str,
             max_bytes: int) -> RawEvent | None:
    if not isinstance(obj, dict):
        raise RecordError("message is not a JSON object")
    subtype = obj.get("subtype")
    if subtype in _SKIPPED_SUBTYPES:
        return None
    edited = obj.get("edited")
    if subtype == "message_changed" and isinstance(obj.get("message"), dict):
        message: dict = obj["message"]
        obj, edited = message, message.get("edited") or obj.get("ts")
    when = from_epoch(obj.get("ts"))
    comment: dict = obj["comment"] if isinstance(obj.get("comment"), dict) else {}
    user = obj.get("user") or comment.get("user")
    profile: dict = obj["user_profile"] if isinstance(obj.get("user_profile"), dict) else {}
    bot = subtype == "bot_message" or (bool(obj.get("bot_id")) and not user)
    sender = (users.get(user) if isinstance(user, str) else None) or profile.get("real_name") or obj.get("username") or user or obj.get("bot_id")
    files = _files(obj)
    text = readable(str(obj.get("text") or ""), users) or readable(_fallback_text(obj, files), users)
    if not text and not files:
        raise RecordError("message has no text, attachment or file")
    thread_ts = obj.get("thread_ts")
    attrs = {
        key: value
        for key, value in (
            ("channel", channel),
            ("user_id", user),
            ("thread_ts", thread_ts),
            ("edited", (edited.get("ts") if isinstance(edited, dict) else edited) if edited else None),
            ("subtype", subtype),
            ("bot", True if bot else None),
            ("files", [{k: f.get(k) for k in ("id", "name", "title", "mimetype", "size")} for f in files] or None),
        )
        if value is not None
    }
    media = files[0] if files else {}
    return RawEvent(
        tenant=tenant,
        source_kind="im",
        source=_SCHEME,
        source_id=f"{channel}:{obj.get('ts')}",
        text=check_text(text, max_bytes),
        event_time=when,
        conversation_id=f"{channel}:{thread_ts}" if thread_ts else channel,
        sender=str(sender) if sender else None,
        recipients=[users.get(m, m) for m in members if m != user],
        media_ref=media.get("url_private") or media.get("permalink") or media.get("name"),
        payload=json.dumps(obj, ensure_ascii=False),
        attrs=attrs,
    )


def _day_files(export: Export) -> list[str]:
    """``channel/YYYY-MM-DD.json`` members, channel by channel, days in order."""
    return [n for n in export.names() if n.count("/") >= 1 and n.lower().endswith(".json")]


@register(_SCHEME, "im", "Slack workspace export (zip or folder)")
def read_slack(path: str, tenant: str) -> Iterator[Record]:
    path, _ = split_options(path)
    conf = limits()
    export = Export(path, conf)
    for name, error in export.refused:
        yield dead_letter(tenant, _SCHEME, export.position(name), error)
    users, members, letters = _directory(export, tenant)
    yield from letters
    for name in _day_files(export):
        channel = name.rsplit("/", 1)[0]
        position = export.position(name)
        if export.size(name) == 0:
            yield dead_letter(tenant, _SCHEME, position, RecordError("empty file"))
            continue
        try:
            with export.open(name) as handle:
                items = JsonItems(handle, [("*",)], conf.max_message_bytes)
                for item in items:
                    where = f"{position}#{item.position}"
                    if item.error is not None:
                        yield dead_letter(tenant, _SCHEME, where, item.error, item.raw)
                        continue
                    try:
                        event = _message(item.value, channel, users, members.get(channel, []), tenant,
                                         conf.max_message_bytes)
                    except Exception as exc:  # one bad message must not stop the channel
                        yield dead_letter(tenant, _SCHEME, where, exc, repr(item.value)[:1024])
                        continue
                    if event is not None:
                        yield event
                if items.top not in ("[", None):
                    yield dead_letter(tenant, _SCHEME, position, RecordError("day file is not a JSON list of messages"))
        except Exception as exc:  # a corrupt member (bad CRC, truncated zip) must not stop the export
            yield dead_letter(tenant, _SCHEME, position, exc)
