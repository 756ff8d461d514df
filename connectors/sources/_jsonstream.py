"""Stream the items of the arrays inside one large JSON document, without loading the document.

Exports such as a FHIR Bundle (``entry``), a Telegram ``result.json``
(``messages``, ``chats.list[].messages``) or a Slack day file (a top-level
array) keep their records in arrays. ``JsonItems`` reads the file in chunks,
walks only the containers on the requested paths, and decodes each item with
the C JSON decoder, so memory stays near the size of one item. A malformed
item (bad JSON, bytes that are not UTF-8, too large) is reported and skipped
when its extent can still be found; a document that ends early stops with one
final error. This module reads only.
"""
from __future__ import annotations

import codecs
import dataclasses
import json
import re
from typing import Iterator, Protocol

from memtape.connectors.sources._common import LimitError, RecordError, undecodable

READ_CHUNK_CHARS = 1 << 16
MAX_RAW_SNIPPET = 64 * 1024
_WS = re.compile(r"[ \t\n\r]*")
_STRING_TAIL = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_STRUCTURE = re.compile(r'[{}\[\]"]')
_SCALAR_END = re.compile(r"[,\]}\s]")


class BinaryReader(Protocol):
    """What ``JsonItems`` reads from: a file opened in binary mode, or a capped reader over an archive member."""

    def read(self, size: int = -1, /) -> bytes: ...


class BrokenDocument(RecordError):
    """The document's structure is broken (truncated, junk between items): nothing after it is readable."""


@dataclasses.dataclass
class Item:
    position: str  # the item's path in the document, e.g. "entry/12"
    value: object = None
    error: RecordError | None = None
    raw: str | None = None


class JsonItems:
    """Iterate ``Item`` values found at ``patterns`` (tuples of keys, "*" for any array element).

    ``context`` holds the scalar members met on the way down (e.g. a chat's
    ``name`` before its ``messages``); ``root`` keeps the top-level scalars.
    """

    def __init__(self, handle: BinaryReader, patterns: list[tuple[str, ...]], max_item_chars: int) -> None:
        self._handle = handle
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._json = json.JSONDecoder()
        self._patterns = patterns
        self._max = max_item_chars
        self._buf = ""
        self._i = 0
        self._eof = False
        self.context: dict[str, object] = {}
        self.root: dict[str, object] = {}
        self.items = 0
        self.top: str | None = None  # the document's first character: "[" or "{" for a usable document

    def __iter__(self) -> Iterator[Item]:
        path: list[str] = []
        try:
            if self._peek() == "\ufeff":
                self._i += 1
            self.top = self._peek()
            if self.top is None:
                raise BrokenDocument("empty document")
            yield from self._walk(self._patterns, path)
            if self._peek() is not None:
                raise BrokenDocument(f"unexpected data after the JSON document at char {self._i}")
        except RecordError as exc:
            yield Item("/".join(path) or "document", error=exc, raw=self._buf[self._i:self._i + MAX_RAW_SNIPPET])

    # reading
    def _fill(self) -> bool:
        if self._eof:
            return False
        data = self._handle.read(max(READ_CHUNK_CHARS, len(self._buf) - self._i))
        self._buf += self._decoder.decode(data, final=not data)
        self._eof = not data
        return True

    def _compact(self) -> None:
        """Forget what was consumed; only called between values, where no index is held."""
        if self._i > READ_CHUNK_CHARS:
            self._buf = self._buf[self._i:]
            self._i = 0

    def _peek(self) -> str | None:
        while True:
            blank = _WS.match(self._buf, self._i)
            assert blank is not None  # the pattern matches the empty string too
            self._i = blank.end()
            if self._i < len(self._buf):
                return self._buf[self._i]
            self._compact()
            if not self._fill():
                return None

    def _expect(self, allowed: str) -> str:
        char = self._peek()
        if char is None:
            raise BrokenDocument("document ends early (truncated)")
        if char not in allowed:
            raise BrokenDocument(f"expected one of {allowed!r} but found {char!r}")
        self._i += 1
        return char

    def _string(self) -> str:
        start = self._i
        while True:
            match = _STRING_TAIL.match(self._buf, start + 1)
            if match:
                self._i = match.end()
                try:
                    return json.loads(self._buf[start:match.end()])
                except json.JSONDecodeError as exc:  # a raw control character or a bad escape inside the string
                    raise RecordError(f"malformed JSON string: {exc.msg}") from exc
            if len(self._buf) - start > self._max:
                raise LimitError(f"JSON key longer than {self._max} characters")
            if not self._fill():
                raise BrokenDocument("document ends inside a string (truncated)")

    # walking
    def _walk(self, patterns: list[tuple[str, ...]], path: list[str]) -> Iterator[Item]:
        if any(not p for p in patterns):
            yield self._item(path)
            return
        char = self._peek()
        keys = {p[0] for p in patterns}
        if char == "{" and keys - {"*"}:
            yield from self._walk_object(patterns, path)
        elif char == "[" and "*" in keys:
            yield from self._walk_array([p[1:] for p in patterns if p[0] == "*"], path)
        else:
            self._value(keep=False)

    def _walk_object(self, patterns: list[tuple[str, ...]], path: list[str]) -> Iterator[Item]:
        saved = dict(self.context)
        self._i += 1
        if self._peek() == "}":
            self._i += 1
            return
        while True:
            if self._peek() != '"':
                raise BrokenDocument("expected an object key")
            key = self._string()
            self._expect(":")
            inner = [p[1:] for p in patterns if p[0] == key]
            if inner:
                path.append(key)
                yield from self._walk(inner, path)
                path.pop()
            else:
                value = self._value(keep=True)
                if not isinstance(value, (dict, list)):
                    self.context[key] = value
                    if not path:
                        self.root[key] = value
            if self._expect(",}") == "}":
                break
        if path:
            self.context = saved

    def _walk_array(self, inner: list[tuple[str, ...]], path: list[str]) -> Iterator[Item]:
        self._i += 1
        index = 0
        while self._peek() != "]":
            path.append(str(index))
            yield from self._walk(inner, path)
            path.pop()
            index += 1
            if self._expect(",]") == "]":
                return
        self._i += 1

    def _item(self, path: list[str]) -> Item:
        self.items += 1
        start = self._i
        position = "/".join(path)
        try:
            value = self._value(keep=True)
            if undecodable(self._buf[start:self._i]):
                raise RecordError("item holds bytes that are not valid UTF-8")
            return Item(position, value=value)
        except BrokenDocument:
            raise
        except RecordError as exc:
            return Item(position, error=exc, raw=self._buf[start:min(self._i, start + MAX_RAW_SNIPPET)])

    # values
    def _value(self, keep: bool) -> object:
        """Decode (or, with ``keep=False``, step over) the value at the cursor."""
        self._compact()
        char = self._peek()
        if char is None:
            raise BrokenDocument("document ends early (truncated)")
        start = self._i
        if char not in "{[":
            return self._scalar(start)
        if keep:
            try:
                value, end = self._json.raw_decode(self._buf, start)
                if end < len(self._buf):
                    self._i = end
                    return value
            except json.JSONDecodeError:
                pass
            except RecursionError as exc:
                self._skip_container(start)
                raise RecordError("JSON nested deeper than the parser allows") from exc
        end, oversize = self._skip_container(start)
        if oversize:
            raise LimitError(f"JSON value larger than {self._max} characters")
        if not keep:
            return None
        try:
            return json.loads(self._buf[start:end])
        except json.JSONDecodeError as exc:
            raise RecordError(f"malformed JSON: {exc.msg}") from exc
        except RecursionError as exc:
            raise RecordError("JSON nested deeper than the parser allows") from exc

    def _scalar(self, start: int) -> object:
        if self._buf[start] == '"':
            return self._string()
        while True:
            match = _SCALAR_END.search(self._buf, start)
            if match or self._eof:
                end = match.start() if match else len(self._buf)
                break
            if len(self._buf) - start > self._max:
                raise BrokenDocument("unreadable data where a value should be")
            self._fill()
        self._i = end
        try:
            return json.loads(self._buf[start:end])
        except json.JSONDecodeError as exc:
            raise BrokenDocument(f"not a JSON value: {self._buf[start:end][:40]!r}") from exc

    def _skip_container(self, start: int) -> tuple[int, bool]:
        """Find where the container at ``start`` ends without validating it; drop it if oversize."""
        depth = 0
        pos = start
        oversize = False
        while True:
            match = _STRUCTURE.search(self._buf, pos)
            if match is None:
                if len(self._buf) - start > self._max:
                    oversize = True
                    self._buf, start, pos = "", 0, 0
                if not self._fill():
                    raise BrokenDocument("document ends inside a value (truncated)")
                continue
            char = match.group()
            pos = match.end()
            if char == '"':
                tail = _STRING_TAIL.match(self._buf, pos)
                while tail is None:
                    if not self._fill():
                        raise BrokenDocument("document ends inside a string (truncated)")
                    tail = _STRING_TAIL.match(self._buf, pos)
                pos = tail.end()
            elif char in "{[":
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    self._i = pos
                    return pos, oversize or pos - start > self._max
