"""Read the members of an export that may be a zip file or an unpacked folder, within limits.

A zip is never extracted: members are streamed from it. Before anything is
read, the member list is checked against ``LimitsConfig``: too many entries,
names that would escape the folder (absolute, ``..``, drive letters), members
or totals that expand past the limits, and members nested too deep are
refused one by one as ``ArchiveError`` values, so a hostile archive is
reported instead of unpacked. This module reads only.
"""
from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath
from typing import IO

from memtape.config import LimitsConfig
from memtape.connectors.base import SourceError
from memtape.connectors.sources._common import (
    ArchiveError,
    LimitError,
    input_files,
    natural_key,
    open_binary,
    outside_folder,
)


class _CappedReader:
    """A binary reader that fails once more than ``cap`` bytes come out of a member."""

    def __init__(self, inner: IO[bytes], cap: int, name: str) -> None:
        self._inner, self._left, self._name = inner, cap, name

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size if size is not None and size >= 0 else self._left + 1)
        self._left -= len(data)
        if self._left < 0:
            raise LimitError(f"{self._name} expands past its size limit")
        return data

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> "_CappedReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unsafe(name: str, max_depth: int) -> str | None:
    """Why a member name must not be read, or None when it is safe."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "absolute path escapes the archive"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return "'..' escapes the archive"
    if len(parts) > max_depth:
        return f"nested deeper than {max_depth} folders"
    return None


class Export:
    """The members of a zip or a folder as relative POSIX names, with bounded opening."""

    def __init__(self, path: str, limits: LimitsConfig) -> None:
        self.path = Path(path)
        self.limits = limits
        self.refused: list[tuple[str, ArchiveError]] = []
        self._zip: zipfile.ZipFile | None = None
        self._sizes: dict[str, int] = {}
        if self.path.is_dir():
            self._files = {}
            for file in input_files(path):
                name = file.relative_to(self.path).as_posix()
                why = outside_folder(file, self.path)
                if why:
                    self.refused.append((name, ArchiveError(why)))
                else:
                    self._files[name] = file
            self._sizes = {name: f.stat().st_size for name, f in self._files.items()}
        elif self.path.is_file():
            self._open_zip()
        else:
            raise SourceError(f"{path}: no such file or folder")

    def _open_zip(self) -> None:
        try:
            self._zip = zipfile.ZipFile(open_binary(self.path))
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise SourceError(f"{self.path}: not a readable zip archive ({exc})") from exc
        if len(infos) > self.limits.max_zip_entries:
            self.refused.append((str(self.path), ArchiveError(
                f"{len(infos)} entries exceed max_zip_entries ({self.limits.max_zip_entries})")))
            return
        total = 0
        for info in infos:
            if info.is_dir():
                continue
            why = _unsafe(info.filename, self.limits.max_nesting_depth)
            if why is None and info.file_size > self.limits.max_attachment_bytes:
                why = f"expands to {info.file_size} bytes, past max_attachment_bytes"
            if why is None and total + info.file_size > self.limits.max_zip_expanded_bytes:
                why = f"archive expands past max_zip_expanded_bytes ({self.limits.max_zip_expanded_bytes})"
            if why:
                self.refused.append((info.filename, ArchiveError(why)))
                continue
            total += info.file_size
            self._sizes[info.filename] = info.file_size

    def names(self) -> list[str]:
        """Readable member names in natural order."""
        return sorted(self._sizes, key=lambda n: natural_key(Path(n)))

    def position(self, name: str) -> str:
        return f"{self.path}!{name}" if self._zip is not None else str(self.path / name)

    def size(self, name: str) -> int:
        return self._sizes[name]

    def open(self, name: str) -> _CappedReader:
        cap = self.limits.max_attachment_bytes
        if self._zip is not None:
            return _CappedReader(self._zip.open(name), min(cap, self._sizes[name]), name)
        return _CappedReader(open_binary(self._files[name]), cap, name)
