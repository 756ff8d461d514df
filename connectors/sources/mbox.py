"""mbox connector (``mbox:PATH``): messages separated by ``From `` lines, streamed line by line.

PATH is one mbox file or a folder of them. A message is held in memory only
up to ``max_attachment_bytes``; a larger one is skipped to its end and
reported as a dead letter, so one giant message never stops the mailbox.
``>From `` quoting (mboxrd) is undone. Each message's position is its file
and byte offset. Reads only.
"""
from __future__ import annotations

import re
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import BinaryIO, Iterator

from memtape.connectors.base import Record, register
from memtape.connectors.sources._common import LimitError, dead_letter, each_file, limits, open_binary
from memtape.connectors.sources._email import Threader, parse_message

_SCHEME = "mbox"
READ_PIECE_BYTES = 1 << 20  # a line longer than this is read in pieces, so no line is held whole
_QUOTED_FROM = re.compile(rb"^>(>*From )")


def _separator_time(line: bytes) -> datetime | None:
    """The asctime stamp that ends a ``From sender Thu Jan  1 00:00:00 2004`` line, if readable."""
    stamp = line[5:].decode("ascii", "replace").strip().split(None, 1)
    try:
        return parsedate_to_datetime(stamp[1]) if len(stamp) == 2 else None
    except (TypeError, ValueError, IndexError):
        return None


def _messages(handle: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes | None, bytes, bytes]]:
    """Yield (offset, message bytes or None when oversize, separator line, first bytes) per message."""
    parts: list[bytes] = []
    offset, size, separator, head = 0, 0, b"", b""
    position, at_line_start, previous_blank, started = 0, True, True, False
    while True:
        piece = handle.readline(READ_PIECE_BYTES)
        if not piece or (at_line_start and previous_blank and piece.startswith(b"From ")):
            if started:
                yield offset, (b"".join(parts) if size <= max_bytes else None), separator, head
            if not piece:
                return
            offset, parts, size, separator, head, started = position, [], 0, piece, b"", True
        else:
            if not started:  # text before any separator is still a message
                offset, started = position, True
            size += len(piece)
            head = head or piece[:1024]
            if size <= max_bytes:
                parts.append(_QUOTED_FROM.sub(rb"\1", piece) if at_line_start else piece)
            else:
                parts = []
        position += len(piece)
        at_line_start = piece.endswith(b"\n")
        previous_blank = at_line_start and not piece.strip()


@register(_SCHEME, "email", "mbox file, or a folder of mbox files")
def read_mbox(path: str, tenant: str) -> Iterator[Record]:
    conf = limits()
    threader = Threader()

    def read_file(file: Path) -> Iterator[Record]:
        with open_binary(file) as handle:
            for offset, raw, separator, head in _messages(handle, conf.max_attachment_bytes):
                position = f"{file}@{offset}"
                if raw is None:
                    error = LimitError(f"message larger than max_attachment_bytes ({conf.max_attachment_bytes})")
                    yield dead_letter(tenant, _SCHEME, position, error, head)
                    continue
                try:
                    yield parse_message(
                        raw,
                        tenant=tenant,
                        source=_SCHEME,
                        fallback_id=f"{file.name}@{offset}",
                        location=position,
                        threader=threader,
                        max_message_bytes=conf.max_message_bytes,
                        max_depth=conf.max_nesting_depth,
                        fallback_time=_separator_time(separator) if separator else None,
                    )
                except Exception as exc:  # one unreadable message must not stop the mailbox
                    yield dead_letter(tenant, _SCHEME, position, exc, raw)

    yield from each_file(path, tenant, _SCHEME, read_file)
