"""IMAP connector (``imap://user@host[:port]/folder``): a live mailbox, read-only, message by message.

The folder is opened with EXAMINE (read-only), messages are listed by UID,
their sizes fetched first so that a message above ``max_attachment_bytes`` is
reported instead of downloaded, and each body is fetched with ``BODY.PEEK[]``
so no \\Seen flag changes. TLS is implicit on port 993 (the default), STARTTLS
elsewhere, or set with ``?tls=ssl|starttls|none``. The password comes from
``MEMTAPE_IMAP_PASSWORD``, never from the URI. Parsing and threading are
shared with the other mail connectors. Writes nothing, on the server or here.
"""
from __future__ import annotations

import imaplib
import os
import re
import ssl
from typing import Iterator
from urllib.parse import parse_qsl, unquote, urlsplit

from memtape.connectors.base import Record, SourceError, register
from memtape.connectors.sources._common import LimitError, RecordError, dead_letter, limits
from memtape.connectors.sources._email import Threader, parse_message

_SCHEME = "imap"
PASSWORD_ENV = "MEMTAPE_IMAP_PASSWORD"
CONNECT_TIMEOUT_S = 30
_SIZE = re.compile(rb"UID (\d+) RFC822\.SIZE (\d+)|RFC822\.SIZE (\d+) UID (\d+)")


def _connect(host: str, port: int | None, tls: str) -> imaplib.IMAP4:
    if tls == "ssl":
        return imaplib.IMAP4_SSL(host, port or 993, ssl_context=ssl.create_default_context(), timeout=CONNECT_TIMEOUT_S)
    conn = imaplib.IMAP4(host, port or 143, timeout=CONNECT_TIMEOUT_S)
    if tls == "starttls":
        conn.starttls(ssl.create_default_context())
    return conn


def _open(uri: str, path: str) -> tuple[imaplib.IMAP4, str, str]:
    """Log in and EXAMINE the folder: (connection, folder, UIDVALIDITY), or a one-line ``SourceError``."""
    url = urlsplit(f"imap:{path}")
    options = dict(parse_qsl(url.query))
    if not url.hostname or not url.username:
        raise SourceError(f"{uri}: expected imap://user@host[:port]/folder")
    folder = unquote(url.path.lstrip("/")) or "INBOX"
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise SourceError(f"{uri}: set {PASSWORD_ENV} to the mailbox password")
    tls = options.get("tls", "ssl" if url.port in (None, 993) else "starttls")
    if tls not in ("ssl", "starttls", "none"):
        raise SourceError(f"{uri}: tls must be ssl, starttls or none")
    try:
        conn = _connect(url.hostname, url.port, tls)
        conn.login(unquote(url.username), password)
        status, _ = conn.select(f'"{folder}"', readonly=True)
        if status != "OK":
            raise SourceError(f"{uri}: cannot open folder {folder!r} ({status})")
    except (OSError, imaplib.IMAP4.error, ssl.SSLError) as exc:
        raise SourceError(f"{uri}: cannot open mailbox ({exc})") from exc
    values = [v for v in conn.response("UIDVALIDITY")[1] if isinstance(v, bytes) and v.strip().isdigit()]
    return conn, folder, values[0].strip().decode() if values else "0"


def _sizes(conn: imaplib.IMAP4) -> dict[int, int]:
    status, data = conn.uid("SEARCH", "ALL")  # no charset (imaplib leaves out a None argument)
    if status != "OK" or not data or not data[0] or not data[0].strip():
        return {}
    status, data = conn.uid("FETCH", "1:*", "(UID RFC822.SIZE)")
    sizes: dict[int, int] = {}
    for line in data if status == "OK" else []:
        text = line[0] if isinstance(line, tuple) else line
        match = _SIZE.search(text or b"")
        if match:
            uid, size = (match.group(1), match.group(2)) if match.group(1) else (match.group(4), match.group(3))
            sizes[int(uid)] = int(size)
    return dict(sorted(sizes.items()))


def _body(conn: imaplib.IMAP4, uid: int) -> bytes:
    status, data = conn.uid("FETCH", str(uid), "(BODY.PEEK[])")
    for part in data if status == "OK" else []:
        if isinstance(part, tuple) and len(part) == 2:
            return part[1]
    raise RecordError(f"server returned no body for UID {uid} ({status})")


@register(_SCHEME, "email", "IMAP mailbox folder, read-only by UID (password in MEMTAPE_IMAP_PASSWORD)")
def read_imap(path: str, tenant: str) -> Iterator[Record]:
    uri = f"{_SCHEME}:{path}"
    conf = limits()
    conn, folder, validity = _open(uri, path)
    threader = Threader()
    base = uri.split("?")[0].rstrip("/")
    try:
        for uid, size in _sizes(conn).items():
            position = f"{base};UIDVALIDITY={validity}/;UID={uid}"
            if size > conf.max_attachment_bytes:
                yield dead_letter(tenant, _SCHEME, position,
                                  LimitError(f"message of {size} bytes exceeds max_attachment_bytes"))
                continue
            raw = b""
            try:
                raw = _body(conn, uid)
                yield parse_message(
                    raw,
                    tenant=tenant,
                    source=_SCHEME,
                    fallback_id=f"{folder}/{validity}/{uid}",
                    location=position,
                    threader=threader,
                    max_message_bytes=conf.max_message_bytes,
                    max_depth=conf.max_nesting_depth,
                    extra_attrs={"folder": folder, "uid": uid},
                )
            except (OSError, imaplib.IMAP4.abort) as exc:
                yield dead_letter(tenant, _SCHEME, position, exc)
                return
            except Exception as exc:  # one unreadable message must not stop the mailbox
                yield dead_letter(tenant, _SCHEME, position, exc, raw)
    finally:
        try:
            conn.logout()
        except (OSError, imaplib.IMAP4.error):
            pass
