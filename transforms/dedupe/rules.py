"""The dedupe rules on one text: low-entropy units, auto-replies, quoted and forwarded blocks, signatures.

Each rule is a pure function of the text and what the scope has seen (stored
sentence hashes, a sender's tail lines); none of them keeps state of its own.
Regexes carry literal clues so that mail without any clue skips the regex.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import re
import zlib
from collections import Counter
from typing import Container, Iterator

from memtape.schemas.records import content_hash, content_hashes
from memtape.transforms.tokens import (
    WORD_RE, count_tokens, ends_at_mark, has_content_words, sentence_spans, unwrap, word_tokens, words,
)

ACK_MAX_WORDS = 8
REPETITIVE_MIN_CHARS = 64
REPETITIVE_MAX_ZLIB_RATIO = 0.2  # text that compresses below this share is a repeated pattern
AUTO_REPLY_MAX_WORDS = 120
SIGNATURE_TAIL_LINES = 6  # lines at the end of a sender's own text that may form a signature
SIGNATURE_MAX_SHARE = 0.5
VALEDICTION_MAX_TRAILING_WORDS = 6  # a closing line may be followed only by short name/title lines
CONTACT_BLOCK_MAX_LINES = 10  # a longer run of name-like lines at the end is a list someone wrote, not a signature
CONTACT_LINE_MAX_WORDS = 8  # a title or company line (two joined by unwrapping) is this short
CONTACT_LINE_MAX_OTHER_WORDS = 3  # beside its numbers and addresses, a contact line holds at most a label or a name
CONTACT_LINE_MAX_CHARS = 100  # longer lines are prose: not looked at word by word
PHONE_MIN_DIGITS = 7
HEADER_MAX_LINES = 60  # a quoted header longer than this is not a header
SAME_BLOCK_MAX_NEWLINES = 4  # a forward line and the quoted header just below it start one block
SHORT_HASH_BYTES = 8  # sentence and tail-line hashes: many are remembered, 64 bits keep them apart

ACK_WORDS = frozenset(
    """ok okay k kk thanks thank thx ty tks cheers you u lol lmao rofl haha hahaha hehe heh yay cool great nice
    awesome perfect sure noted ack alright right got it np welcome much so very too oh ah wow omg good sounds will
    do done hi hey hello bye cya see ya later night morning congrats congratulations yes yeah yep yup agreed
    a the for that this all sir""".split()
)


# The rules below ask of the same text in turn: lower-case it once for all of them.
_lowered = functools.lru_cache(maxsize=4)(str.lower)


@dataclasses.dataclass(frozen=True)
class _Clued:
    """A regex and literal clues (lower case), one of which every match contains, or a match of ``clue_pattern``.

    Most mail holds none of them, and ``in`` finds that far faster than the
    regex engine can fail: ASCII text without a clue skips the regex (for ASCII
    text, case-insensitive matching is comparing lower case). A clue pattern
    that opens with a literal ("on \\d\\d?/") stands for a family of clues in one scan.
    """

    regex: re.Pattern
    clues: tuple[str, ...]
    clue_pattern: re.Pattern | None = None

    def may_match(self, text: str) -> bool:
        if not text.isascii():
            return True
        lowered = _lowered(text)
        return any(clue in lowered for clue in self.clues) or bool(self.clue_pattern and self.clue_pattern.search(lowered))

    def search(self, text: str, pos: int = 0) -> re.Match | None:
        return self.regex.search(text, pos) if self.may_match(text) else None

    def finditer(self, text: str) -> Iterator[re.Match]:
        return self.regex.finditer(text) if self.may_match(text) else iter(())

    def findall(self, text: str) -> list[str]:
        return self.regex.findall(text) if self.may_match(text) else []

    def sub(self, repl: str, text: str) -> str:
        return self.regex.sub(repl, text) if self.may_match(text) else text


_LAUGH_RE = re.compile(r"^(?:ha|he|ja|lo|xd)+h?l?$")
_AUTO_REPLY_RE = _Clued(re.compile(
    r"\b(?:out of (?:the )?office|auto(?:matic)?[- ]?reply|autoreply|away from (?:my|the) (?:desk|office)"
    r"|(?:on|in) (?:vacation|holiday|leave) until|limited access to (?:e-?mail|my e-?mail)|will be out of the office)\b",
    re.I,
), ("out of office", "out of the office", "auto", "away from", "vacation until", "holiday until", "leave until", "limited access to"))
_BLOCK_START_RES = {
    "reply": _Clued(re.compile(
        r"^[ \t]*-{2,}\s*Original Message\s*-{2,}[ \t]*$"
        r"|^[ \t]*On\b.{0,200}\bwrote:[ \t]*$"
        r"|^.{1,120}\bon \d{1,2}/\d{1,2}/\d{2,4} \d{1,2}:\d{2}(?::\d{2})?\s*[AP]M\s*$",
        re.I | re.M,
    ), ("original message", "wrote:"), re.compile(r"on \d\d?/")),
    "forward": _Clued(re.compile(
        r"^[ \t]*-{2,}[ \t]*Forwarded (?:by\b.*|message[ \t]*-{2,}[ \t]*)$|^[ \t]*Begin forwarded message:[ \t]*$",
        re.I | re.M,
    ), ("forwarded",)),
}
_OUTLOOK_HEADER_RE = _Clued(re.compile(r"^[ \t]*From:[ \t].+\n[ \t]*(?:Sent|Date):\s", re.I | re.M), ("from:",))
_ATTACHMENT_LINE_RE = _Clued(re.compile(r"^[ \t]*- [^\n]+\.\w{2,4}[ \t]*$", re.M), ("- ",))
_HEADER_END_RE = re.compile(r"^\s*Subject:.*$", re.I | re.M)
_FORWARD_SUBJECT_RE = re.compile(r"^\s*(?:fw|fwd)\s*:", re.I)
_QUOTED_LINE_RE = _Clued(re.compile(r"^[ \t]*>.*(?:\n|$)", re.M), (">",))
_SIG_DELIMITER_RE = _Clued(re.compile(r"^-- ?$", re.M), ("--",))
_VALEDICTION_RE = re.compile(
    r"^\s*(?:thanks|thank you|many thanks|regards|best|best regards|kind regards|warm regards|cheers|sincerely"
    r"|all the best|take care|yours)\b[\s,./!-]*(?:\w+[.!]?)?\s*$",
    re.I,
)
_DISCLAIMER_RE = _Clued(re.compile(
    r"^\s*(?:\**\s*)?(?:confidentiality notice|this (?:e-?mail|message|communication|transmission)\b.{0,80}"
    r"\b(?:confidential|privileged|intended)|the information (?:contained )?in this (?:e-?mail|message))",
    re.I | re.M,
), ("confidential", "privileged", "intended", "the information"))


# Contact data: an email address, a web address, a phone number (digits counted apart) or an extension.
_CONTACT_RE = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+|(?:https?://|www\.)\S+"
    r"|(?P<phone>\+?\(?\d{1,4}\)?(?:[ .-]?\(?\d{2,4}\)?){2,4})|\b(?:ext|x)\.? ?\d{2,6}\b",
    re.I,
)
_CONTACT_LABELS = frozenset(
    "phone tel telephone fax facsimile cell cellular mobile pager office direct work home main voice ph p f c m t o e w"
    " v email mail web".split()
)
_TITLE_CONNECTORS = frozenset("of and for the in at to on de la van von".split())
_RULE_LINE_RE = re.compile(r"^[^\w]*$")  # blank, or a rule of dashes, stars or underscores


def short_hash(text: str) -> str:
    """A 64-bit content hash: sentence and tail-line memories hold many of them, and JSON carries each one."""
    return content_hash(text, digest_size=SHORT_HASH_BYTES)


def short_hashes(text: str, spans: list[tuple[int, int]]) -> list[str]:
    """``_short_hash`` of each span of ``text``, the text case-folded once for all of them."""
    return content_hashes(text, spans, digest_size=SHORT_HASH_BYTES)


def low_entropy_reason(text: str) -> str | None:
    """Why a unit carries (almost) no information, or None.

    Acknowledgements and laughter are short and drawn from a tiny vocabulary;
    long repeated patterns compress to almost nothing under zlib.
    """
    stripped = text.strip()
    if not stripped:
        return "empty"
    ws = [m.group().casefold() for m in itertools.islice(WORD_RE.finditer(stripped), ACK_MAX_WORDS + 1)]
    if not ws:
        return "emoji_only"
    if len(ws) <= ACK_MAX_WORDS and all(w in ACK_WORDS or _LAUGH_RE.match(w) for w in ws):
        return "short_ack"
    raw = stripped.encode("utf-8", "surrogatepass")
    if len(raw) >= REPETITIVE_MIN_CHARS and len(zlib.compress(raw)) / len(raw) < REPETITIVE_MAX_ZLIB_RATIO:
        return "repetitive"
    return None


def is_auto_reply(text: str, subject: str) -> bool:
    """Out-of-office and automatic replies: a stock phrase in the subject or a short body."""
    if _AUTO_REPLY_RE.search(subject or ""):
        return True
    return bool(_AUTO_REPLY_RE.search(text)) and len(words(text)) <= AUTO_REPLY_MAX_WORDS


def _block_starts(text: str) -> list[tuple[int, str]]:
    starts = [(m.start(), kind) for kind, rx in _BLOCK_START_RES.items() for m in rx.finditer(text)]
    starts += [(m.start(), "reply") for m in _OUTLOOK_HEADER_RE.finditer(text)]
    merged: list[tuple[int, str]] = []
    for pos, kind in sorted(starts):
        # A header line right after a block start ("-----Original Message-----\nFrom: ...") is the same block.
        if merged and text.count("\n", merged[-1][0], pos) <= SAME_BLOCK_MAX_NEWLINES:
            continue
        merged.append((pos, kind))
    return merged


def _block_body(block: str) -> str:
    """The quoted message without its From/To/Subject header lines."""
    lines = block.split("\n")
    head = "\n".join(lines[:HEADER_MAX_LINES])
    end = _HEADER_END_RE.search(head)
    if end:
        cut = head.count("\n", 0, end.end()) + 1
    else:  # no Subject line: the header is the first paragraph
        cut = next((i for i, ln in enumerate(lines[:HEADER_MAX_LINES]) if i and not ln.strip()), 1)
    return "\n".join(lines[cut:])


def unseen_sentences(text: str, seen: Container[str]) -> str:
    text = unwrap(text)
    spans = sentence_spans(text)
    return "\n".join(text[a:b] for (a, b), h in zip(spans, short_hashes(text, spans)) if h not in seen)


def split_quoted(text: str, subject: str, seen: Container[str]) -> tuple[str, str, dict[str, int]]:
    """(own text, kept quoted text, stripped token counts) of one email body.

    Quoted replies go when the author wrote something of their own; forwarded
    blocks keep only the sentences this tenant has not stored before.
    """
    stripped: Counter = Counter()
    quoted_lines = "".join(_QUOTED_LINE_RE.findall(text))
    body = _QUOTED_LINE_RE.sub("", text) if quoted_lines else text
    starts = _block_starts(body)
    own = body[: starts[0][0]] if starts else body
    has_own = has_content_words(_ATTACHMENT_LINE_RE.sub("", own))
    if quoted_lines:
        if has_own:
            stripped["quoted_reply"] += count_tokens(quoted_lines)
        else:
            own = own + "\n" + re.sub(r"^[ \t]*>+ ?", "", quoted_lines, flags=re.M)
    kept: list[str] = []
    forward_subject = bool(_FORWARD_SUBJECT_RE.match(subject or ""))
    for i, (pos, kind) in enumerate(starts):
        block = body[pos : starts[i + 1][0] if i + 1 < len(starts) else len(body)]
        is_forward = kind == "forward" or forward_subject
        if not is_forward and has_own:
            stripped["quoted_reply"] += count_tokens(block)
            continue
        fresh = unseen_sentences(_block_body(block), seen)
        stripped["forwarded_known" if is_forward else "quoted_reply"] += count_tokens(block) - count_tokens(fresh)
        if fresh.strip():
            kept.append(fresh)
    return own, "\n\n".join(kept), dict(stripped)


def tail_lines(text: str) -> list[str]:
    return [ln for ln in text.rstrip().split("\n") if ln.strip()][-SIGNATURE_TAIL_LINES:]


def sender_names(address: str, display_name: str) -> frozenset[str]:
    """The words a sender signs with: those of the display name and of the address's local part, and that part whole.

    The whole local part lets a name match an address that runs names together
    ("Alan" for alanmit@, "Skilling" for jskilling@). A display name counts up
    to its first "@": one that is an address ("Vege@Izhuta.com@ENRON", "Public
    Relations@ENRON") would make "com" or "enron" a name, and any link at the
    end of the mail its sender's card.
    """
    local = address.partition("@")[0].casefold()
    shown = display_name.partition("@")[0]
    return frozenset(words(shown) + re.split(r"[^a-z]+", local) + [re.sub(r"[^a-z]", "", local)]) - {""}


def _is_name_like(line: str, max_words: int) -> bool:
    """A short line of capitalised words, initials, numbers and connectors: a name, a job title, a company, an address."""
    if len(line) > CONTACT_LINE_MAX_CHARS:
        return False
    ws = word_tokens(line)
    return 0 < len(ws) <= max_words and line.rstrip()[-1:] not in "?!:" and any(w[0].isalpha() for w in ws) and all(
        w[0].isupper() or w[0].isdigit() or w in _TITLE_CONNECTORS for w in ws
    )


def _names_sender(ws: list[str], names: frozenset[str], min_prefix: int) -> bool:
    """Whether a word is one of ``names`` or, ``min_prefix`` letters or longer, begins or ends one."""
    return any(w in names or (len(w) >= min_prefix and any(n.startswith(w) or n.endswith(w) for n in names))
               for w in (w.casefold() for w in ws) if len(w) >= 2)


def _is_sender_name(line: str, names: frozenset[str]) -> bool:
    return _is_name_like(line, VALEDICTION_MAX_TRAILING_WORDS) and _names_sender(word_tokens(line), names, 3)


def _is_contact(line: str) -> bool:
    """Mostly contact data: addresses or phone numbers, and beside them at most a label or a name, no sentence."""
    if len(line) > CONTACT_LINE_MAX_CHARS:
        return False
    found = False
    for m in _CONTACT_RE.finditer(line):
        found = found or not m.group("phone") or sum(c.isdigit() for c in m.group()) >= PHONE_MIN_DIGITS
    if not found:
        return False
    other = word_tokens(_CONTACT_RE.sub(" ", line))
    return len(other) <= CONTACT_LINE_MAX_OTHER_WORDS and all(w[0].isupper() or w.casefold() in _CONTACT_LABELS for w in other)


def contact_block_start(lines: list[str], names: frozenset[str]) -> int:
    """Where a trailing contact block begins in ``lines``, or ``len(lines)`` when they end without one.

    The block is a run of short lines to the end (names, titles, companies,
    phone numbers, addresses, rules) opened by the sender's name or a contact
    line. It must name the sender (a name line, or an address with the
    sender's name in it), so a venue's phone or an RSVP link at the end of a
    mail stays; it must hold contact data unless it is only the sender's name,
    so a closing list of names stays. Contact lines introduced by a colon are
    content, and so is a run too long to be a signature, and a first line
    that ends, with its full stop, a sentence wrapped from the line above.
    """
    top, run, contacts = len(lines), list[int](), set[int]()
    while top > 0 and len(run) <= CONTACT_BLOCK_MAX_LINES:
        line = lines[top - 1]
        if _ATTACHMENT_LINE_RE.regex.match(line):
            break
        if _RULE_LINE_RE.match(line):
            top -= 1
        elif _is_contact(line):
            top -= 1
            run.append(top)
            contacts.add(top)
        elif _is_name_like(line, CONTACT_LINE_MAX_WORDS):
            top -= 1
            run.append(top)
        else:
            break
    if not run or len(run) > CONTACT_BLOCK_MAX_LINES or (top > 0 and lines[top - 1].rstrip().endswith(":")):
        return len(lines)
    if top > 0 and run[-1] == top and not ends_at_mark(lines[top - 1].rstrip()) and ends_at_mark(lines[top].rstrip()):
        # the run's first line ends the sentence wrapped above it ("... or call\n(281) 424-3084."): content
        contacts.discard(run.pop())
        top += 1
        if not run:
            return len(lines)
    run.reverse()
    named = [i for i in run if (_names_sender(re.findall(r"[a-z]+", lines[i].casefold()), names, 4) if i in contacts
                                else _is_sender_name(lines[i], names))]
    if not named:
        return len(lines)
    start = min(named[0], min(contacts, default=named[0]))
    if not (contacts or all(i in named for i in run if i >= start)):
        return len(lines)
    while start > top and _RULE_LINE_RE.match(lines[start - 1]):
        start -= 1
    return start


def strip_signature(text: str, tails: Counter, names: frozenset[str] = frozenset(), message: str = "") -> str:
    """``text`` (a sender's own text, not yet unwrapped) unwrapped, without its signature, disclaimer or sign-off.

    On first sight, a trailing contact block (``contact_block_start``, ``names``
    being the sender's) goes unless it is most of the ``message`` (the whole
    body, quoted parts included: a short reply above a long quote still loses
    its card); it is found before unwrapping, which would run its short lines
    together. A line this sender already ended an earlier message with is a
    learned signature line, unless such lines make up most of the text (then
    it is a re-sent message, for near-duplicate detection to judge). A ``-- ``
    delimiter, a legal disclaimer or a closing word followed only by short
    name lines mark where the tail begins.
    """
    own = text
    lines = text.rstrip().split("\n")
    block = contact_block_start(lines, names)
    if block < len(lines) and count_tokens(own) - count_tokens("\n".join(lines[:block])) > SIGNATURE_MAX_SHARE * max(
        count_tokens(message), count_tokens(own)
    ):
        block = len(lines)
    text = unwrap("\n".join(lines[:block]))
    lines = text.rstrip().split("\n")
    end = len(lines)
    while end > 0 and (not lines[end - 1].strip() or tails.get(short_hash(lines[end - 1]), 0) > 0):
        end -= 1
    if end < len(lines) and count_tokens("\n".join(lines[:end])) < (1 - SIGNATURE_MAX_SHARE) * count_tokens(own):
        end = len(lines)
    cut = end
    head = "\n".join(lines[:end])
    for rx in (_SIG_DELIMITER_RE, _DISCLAIMER_RE):
        m = rx.search(head, len(head) // 2)
        if m:
            cut = min(cut, head.count("\n", 0, m.start()))
    for i in range(max(0, end - SIGNATURE_TAIL_LINES), end):
        trailing = [ln for ln in lines[i + 1 : end] if ln.strip()]
        if _VALEDICTION_RE.match(lines[i]) and all(len(ln.split()) <= VALEDICTION_MAX_TRAILING_WORDS for ln in trailing):
            cut = min(cut, i)
            break
    kept = "\n".join(lines[:cut]).rstrip()
    return kept if has_content_words(kept) else unwrap(own).rstrip()
