"""Maildir connector (``maildir:PATH``): one message per file, in ``cur``/``new`` or any sub-folder.

Real exports are often only "Maildir-like" (the Enron release keeps messages
as numbered files in plain folders), so every regular file under PATH is a
message except those in ``tmp``. Files stream in natural order; a file is read
whole only when under ``max_attachment_bytes``. Reads only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from memtape.connectors.base import Record, register
from memtape.connectors.sources._common import (
    LimitError,
    RecordError,
    dead_letter,
    input_files,
    limits,
    open_binary,
    outside_folder,
    read_bounded,
)
from memtape.connectors.sources._email import Threader, parse_message

_SCHEME = "maildir"
_SKIPPED_DIRS = ("tmp",)


def read_message_files(files: list[Path], root: Path, tenant: str, source: str) -> Iterator[Record]:
    """Parse each file as one message, threading across all of them; bad files and links out of ``root`` become dead letters."""
    conf = limits()
    threader = Threader()
    base = root if root.is_dir() else root.parent
    for file in files:
        relative = file.relative_to(base).as_posix()
        raw = b""
        try:
            why = outside_folder(file, root)
            if why:
                raise RecordError(why)
            with open_binary(file) as handle:
                raw = read_bounded(handle, conf.max_attachment_bytes, "message file")
            yield parse_message(
                raw,
                tenant=tenant,
                source=source,
                fallback_id=relative,
                location=str(file),
                threader=threader,
                max_message_bytes=conf.max_message_bytes,
                max_depth=conf.max_nesting_depth,
                extra_attrs={"folder": str(Path(relative).parent)},
            )
        except LimitError as exc:
            yield dead_letter(tenant, source, str(file), exc, raw[:1024])
        except Exception as exc:  # one unreadable message must not stop the mailbox
            yield dead_letter(tenant, source, str(file), exc, raw)


@register(_SCHEME, "email", "Maildir folder (cur/new) or a folder of one-message files")
def read_maildir(path: str, tenant: str) -> Iterator[Record]:
    files = input_files(path, skip_dirs=_SKIPPED_DIRS)
    yield from read_message_files(files, Path(path), tenant, _SCHEME)
