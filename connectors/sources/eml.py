"""Folder-of-.eml connector (``eml:PATH``): each ``.eml`` file below PATH (or PATH itself) is one message.

Parsing and threading are shared with Maildir; this module only chooses the
files. Reads only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from memtape.connectors.base import Record, register
from memtape.connectors.sources._common import input_files
from memtape.connectors.sources.maildir import read_message_files

_SCHEME = "eml"


@register(_SCHEME, "email", "a .eml file or a folder of .eml files")
def read_eml(path: str, tenant: str) -> Iterator[Record]:
    files = input_files(path, accept={".eml"})
    yield from read_message_files(files, Path(path), tenant, _SCHEME)
