"""``memtape eval compression``: how many tokens memories spend against the raw text, and what survives.

Runs dedupe and extractive compression (no embeddings) over a LoCoMo JSON file,
an email Maildir folder, or any ``scheme:path`` source URI, then prints raw and
memory token totals, their ratio, the share of memory text that stands verbatim
in the raw messages (``verbatim_share``), the near-duplicate pairs found and,
for LoCoMo, the share of QA evidence turns whose content a memory still carries.
Episodes are segmented simply (a LoCoMo session, or a window of one email
thread) because the surprise segmenter is another stage's job. Reads only.
"""
from __future__ import annotations

import email
import json
import re
from collections import defaultdict
from datetime import datetime
from email import policy
from email.utils import parsedate_to_datetime, parseaddr
from pathlib import Path
from typing import Any

import click

from memtape.errors import UserError

EMAIL_WINDOW = 20  # messages of one thread per eval episode
EVIDENCE_MIN_COVERAGE = 0.5  # share of an evidence turn's content words its memory must keep verbatim
LOCOMO_TIME_FORMAT = "%I:%M %p on %d %B, %Y"
_SUBJECT_PREFIX_RE = re.compile(r"^\s*(?:(?:re|fw|fwd|aw)\s*:\s*)+", re.I)
_SESSION_RE = re.compile(r"session_(\d+)")
_DIA_ID_RE = re.compile(r"D\d+:\d+")


def _thread_of(subject: str) -> str:
    return _SUBJECT_PREFIX_RE.sub("", subject or "").strip().casefold() or "(no subject)"


def maildir_rows(root: Path, tenant: str) -> list[dict]:
    """Email rows from the maildir connector when it is installed, else parsed here with the stdlib."""
    from memtape.connectors.base import connectors, read_source
    from memtape.schemas.records import RawEvent

    if "maildir" in connectors():
        return [r.to_row() for r in read_source(f"maildir:{root}", tenant) if isinstance(r, RawEvent)]
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.compat32)
        if msg.is_multipart():
            continue
        subject = str(msg["Subject"] or "")
        try:
            when = parsedate_to_datetime(msg["Date"]) if msg["Date"] else None
        except (TypeError, ValueError):
            when = None
        rows.append(RawEvent(
            tenant=tenant, source_kind="email", source="maildir", source_id=str(msg["Message-ID"] or path),
            text=str(msg.get_payload()), event_time=when, conversation_id=_thread_of(subject),
            sender=parseaddr(str(msg["From"] or ""))[1] or None, attrs={"subject": subject},
        ).to_row())
    return rows


def _uri_rows(uri: str, tenant: str) -> list[dict]:
    from memtape.connectors.base import read_source
    from memtape.schemas.records import RawEvent

    return [r.to_row() for r in read_source(uri, tenant) if isinstance(r, RawEvent)]


def thread_windows(rows: list[dict]) -> list[list[dict]]:
    """Episodes for the eval: each conversation in time order, cut into windows of EMAIL_WINDOW."""
    from memtape.transforms.dedupe import event_order

    threads: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        threads[(row["tenant"], row.get("conversation_id") or row["event_id"])].append(row)
    episodes = []
    for members in threads.values():
        members.sort(key=event_order)
        episodes += [members[i : i + EMAIL_WINDOW] for i in range(0, len(members), EMAIL_WINDOW)]
    return episodes


def locomo_runs(path: Path) -> tuple[list[dict], list[list[dict]], list[dict]]:
    """(raw rows, episodes as lists of rows, evidence items) of a LoCoMo file; one episode per session."""
    from memtape.schemas.records import RawEvent

    rows, episodes, evidence = [], [], []
    for sample in json.loads(path.read_text()):
        tenant = str(sample.get("sample_id"))
        conv = sample["conversation"]
        ids: dict[str, str] = {}
        for key in sorted((k for k in conv if _SESSION_RE.fullmatch(k)), key=lambda k: int(k.split("_")[1])):
            start = datetime.strptime(conv[f"{key}_date_time"], LOCOMO_TIME_FORMAT)
            session = []
            for turn in conv[key]:
                event = RawEvent(tenant=tenant, source_kind="im", source="locomo", source_id=turn["dia_id"], text=turn["text"],
                                 event_time=start, conversation_id=tenant, sender=turn["speaker"])
                row = event.to_row()
                ids[turn["dia_id"]] = row["event_id"]
                session.append(row)
            rows += session
            episodes.append(session)
        for qa in sample["qa"]:
            answer = str(qa.get("answer", qa.get("adversarial_answer", "")))
            for dia_id in _DIA_ID_RE.findall(" ".join(map(str, qa.get("evidence", [])))):
                evidence.append({"event_id": ids.get(dia_id), "answer": answer})
    return rows, episodes, evidence


def compress_episodes(rows: list[dict], episodes: list[list[dict]], budget_ratio: float) -> tuple[list[dict], dict[str, dict], dict[str, dict]]:
    """(memories, kept units by event_id, dropped units by event_id) after dedupe and compression."""
    from memtape.schemas.records import stable_id
    from memtape.transforms.compress import build_memory
    from memtape.transforms.dedupe import Deduper

    kept: dict[str, Any] = {}
    dropped: dict[str, dict] = {}
    for unit, gone in Deduper().process_batch(rows):
        if unit is not None:
            kept[unit["event_id"]] = unit
        else:
            assert gone is not None  # the deduper yields exactly one of the two
            dropped[gone["event_id"]] = gone
    memories = []
    for members in episodes:
        first = members[0]
        member_ids = [r["event_id"] for r in members]
        episode = {"tenant": first["tenant"], "episode_id": stable_id(first["tenant"], "eval-episode", member_ids[0], len(member_ids)),
                   "conversation_id": first.get("conversation_id"), "source_kind": first.get("source_kind"), "member_ids": member_ids}
        bundle = {"episode": episode, "units": [kept[i] for i in member_ids if i in kept],
                  "dropped": [dropped[i] for i in member_ids if i in dropped]}
        memories.append(build_memory(bundle, budget_ratio)[0])
    return memories, kept, dropped


def evidence_survival(evidence: list[dict], raw_text: dict[str, str], memories: list[dict], dropped: dict[str, dict]) -> float:
    """Share of evidence turns whose content a memory carries through provenance.

    A turn survives when a memory lists it (or the unit it duplicates) in
    ``raw_event_ids`` and that memory's text keeps sentences of the turn
    that hold at least EVIDENCE_MIN_COVERAGE of its content words and every
    answer content word the turn contains.
    """
    from memtape.transforms.tokens import content_words, sentence_spans, unwrap

    by_member: dict[str, list[dict]] = defaultdict(list)
    for memory in memories:
        for event_id in memory["raw_event_ids"]:
            by_member[event_id].append(memory)

    def survives(event_id: str | None, answer: str) -> bool:
        while event_id in dropped and dropped[event_id]["duplicate_of"]:
            event_id = dropped[event_id]["duplicate_of"]
        if event_id is None or event_id in dropped:
            return False
        text = unwrap(raw_text[event_id])
        sentences = [text[a:b] for a, b in sentence_spans(text)]
        turn_words = content_words(text)
        needed = content_words(answer) & turn_words
        for memory in by_member[event_id]:
            kept = [s for s in sentences if s in memory["text"]]
            kept_words = set().union(*(content_words(s) for s in kept))
            if needed <= kept_words and len(kept_words & turn_words) >= EVIDENCE_MIN_COVERAGE * len(turn_words):
                return True
        return False

    turns: dict[str, bool] = {}
    for item in evidence:
        key = item["event_id"]
        turns[key] = turns.get(key, True) and survives(key, item["answer"])
    return sum(turns.values()) / len(turns) if turns else 0.0


def verbatim_share(memories: list[dict], raw_text: dict[str, str]) -> float:
    """Share of memory pieces (a line's text between gap marks) that stand in one of their memory's raw messages."""
    from memtape.schemas.records import MEMORY_GAP

    plain = lambda t: " ".join(t.split()).casefold()  # noqa: E731
    found = total = 0
    for memory in memories:
        sources = [plain(raw_text.get(e) or "") for e in memory["raw_event_ids"]]
        for line in memory["text"].split("\n"):
            for piece in line.partition(": ")[2].split(MEMORY_GAP):
                if piece.strip():
                    total += 1
                    found += any(plain(piece) in source for source in sources)
    return found / total if total else 1.0


def evaluate(data: str, budget_ratio: float, tenant: str = "eval") -> dict[str, Any]:
    """The compression scores for one data path or source URI."""
    from memtape.transforms.tokens import count_tokens

    path = Path(data)
    evidence: list[dict] | None = None
    if path.is_file() and path.suffix == ".json":
        rows, episodes, evidence = locomo_runs(path)
    elif path.is_dir():
        rows = maildir_rows(path, tenant)
        episodes = thread_windows(rows)
    elif ":" in data and not path.exists():
        rows = _uri_rows(data, tenant)
        episodes = thread_windows(rows)
    else:
        raise UserError(f"{data}: no such LoCoMo .json file, Maildir folder or source URI")
    if not rows:
        raise UserError(f"{data}: no messages found")
    memories, kept, dropped = compress_episodes(rows, episodes, budget_ratio)
    raw_tokens = sum(count_tokens(r["text"]) for r in rows)
    text_tokens = sum(m["token_count"] for m in memories)
    header_tokens = sum(count_tokens(m["header"]) for m in memories)
    memory_tokens = text_tokens + header_tokens
    near_dups = sum(1 for d in dropped.values() if d["reason"] == "near_duplicate") + sum(1 for u in kept.values() if u.get("duplicate_of"))
    raw_text = {r["event_id"]: r["text"] for r in rows}
    survival = None
    if evidence is not None:
        survival = evidence_survival(evidence, raw_text, memories, dropped)
    reasons: dict[str, int] = defaultdict(int)
    for d in dropped.values():
        reasons[d["reason"]] += 1
    return {
        "raw_tokens": raw_tokens,
        "memory_tokens": memory_tokens,
        "ratio": round(memory_tokens / raw_tokens, 4) if raw_tokens else None,
        "verbatim_share": round(verbatim_share(memories, raw_text), 4),
        "near_dup_pairs": near_dups,
        "evidence_survival": round(survival, 4) if survival is not None else None,
        "memory_text_tokens": text_tokens,
        "header_tokens": header_tokens,
        "messages": len(rows),
        "episodes": len(memories),
        "dropped": dict(sorted(reasons.items())),
        "budget_ratio": budget_ratio,
    }


@click.command()
@click.option("--data", required=True, help="LoCoMo .json file, Maildir folder, or SCHEME:PATH source URI.")
@click.option("--format", "fmt", type=click.Choice(["json", "text"]), default="json", show_default=True)
@click.option("--budget-ratio", type=click.FloatRange(0.01, 1.0), default=None,
              help="Share of kept tokens a memory may spend (default: the stage's).")
def command(data: str, fmt: str, budget_ratio: float | None) -> None:
    """Measure memory tokens against raw tokens, near-duplicates and LoCoMo evidence survival."""
    from memtape.transforms.compress import DEFAULT_BUDGET_RATIO

    scores = evaluate(data, budget_ratio or DEFAULT_BUDGET_RATIO)
    if fmt == "json":
        click.echo(json.dumps(scores))
    else:
        for key, value in scores.items():
            click.echo(f"{key}: {value}")
