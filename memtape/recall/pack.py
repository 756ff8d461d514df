"""Pack recalled items into a context under a token budget: coverage per token, no repeats, then in order.

Items are chosen greedily by their recall score, raised by how many of the
query's still-uncovered terms and entities they add; an item whose raw events
are already in the context, or whose words nearly repeat a chosen item, is
dropped. The budget is a ceiling, not a target: recall passes only the items
above its relevance floor, and packing stops at ``max_items``. The chosen
items are then arranged by relevance (the best memory first, each memory's
items together in time order) or by time, and rendered with one ``[day]``
line whenever the day changes (a header repeated per line spends the budget
on nothing). Tokens are counted as words x ``TOKENS_PER_WORD``. This module
only arranges text: it never reads or writes the store.
"""
from __future__ import annotations

import dataclasses
import heapq
from datetime import datetime
from typing import Sequence

from memtape.transforms.tokens import content_words

TOKENS_PER_WORD = 1.3
COVERAGE_WEIGHT = 0.5  # a memory adding every missing query term is worth 1.5x its score
COST_EXPONENT = 0.0  # 0 ranks by score alone; 1 by score per token (short fragments then crowd out answers)
REDUNDANT_JACCARD = 0.8
PACK_POOL = 150  # only the best-scored candidates are considered for packing
DAY_FORMAT = "%-d %B %Y"


def count_tokens(text: str) -> float:
    """Budget tokens of ``text``: words x 1.3, the estimate the recall evaluation also uses."""
    return len(text.split()) * TOKENS_PER_WORD


@dataclasses.dataclass
class Packable:
    """One candidate (a memory line or a whole memory) as packing sees it."""

    key: str
    score: float
    text: str
    who: str | None
    when: datetime | None
    raw_event_ids: list[str]

    def line(self) -> str:
        return f"{self.who}: {self.text}" if self.who else self.text

    def day(self) -> str | None:
        return self.when.strftime(DAY_FORMAT) if self.when else None


def day_line(day: str) -> str:
    return f"[{day}]"


def pack(candidates: Sequence[Packable], query: str, budget: float, max_items: int | None = None) -> list[Packable]:
    """The subset of ``candidates`` to show within ``budget`` tokens (and ``max_items``), in the order chosen.

    Lazy greedy: a candidate's utility only falls as the context covers more
    query terms, so a popped candidate whose refreshed utility still beats the
    next stored one is the greedy choice without rescoring the rest.
    """
    pool = sorted(candidates, key=lambda c: -c.score)[:PACK_POOL]
    terms = content_words(query)
    words = {c.key: content_words(c.line()) for c in pool}
    cost = {c.key: count_tokens(c.line()) for c in pool}
    days = {c.key: c.day() for c in pool}
    header_cost = {d: count_tokens(day_line(d)) for d in set(days.values()) if d}
    chosen: list[Packable] = []
    covered_terms: set[str] = set()
    covered_events: set[str] = set()
    opened: set[str | None] = set()
    used = 0.0

    def extra(c: Packable) -> float:
        day = days[c.key]
        return cost[c.key] + (header_cost[day] if day and day not in opened else 0.0)

    def utility(c: Packable) -> float:
        gain = len((words[c.key] & terms) - covered_terms) / len(terms) if terms else 0.0
        return c.score * (1.0 + COVERAGE_WEIGHT * gain) / max(extra(c), 1.0) ** COST_EXPONENT

    heap = [(-utility(c), i) for i, c in enumerate(pool)]
    heapq.heapify(heap)
    while heap and budget - used >= 1.0 and (max_items is None or len(chosen) < max_items):
        _, i = heapq.heappop(heap)
        c = pool[i]
        if used + extra(c) > budget:
            continue
        current = utility(c)
        if heap and current < -heap[0][0]:
            heapq.heappush(heap, (-current, i))
            continue
        if current <= 0 or _redundant(c, chosen, words, covered_events):
            continue
        used += extra(c)
        chosen.append(c)
        opened.add(days[c.key])
        covered_terms |= words[c.key] & terms
        covered_events.update(c.raw_event_ids)
    return chosen


def _chronological(c: Packable) -> tuple:
    return (c.when is None, c.when or datetime.min)


def arrange(chosen: Sequence[Packable], group_of: dict[str, str], order: str) -> list[Packable]:
    """``chosen`` by ``time``, or by ``relevance``: groups (``group_of`` each key) best first, each in time order."""
    if order == "time":
        return sorted(chosen, key=_chronological)
    best: dict[str, float] = {}
    for c in chosen:
        group = group_of[c.key]
        best[group] = max(best.get(group, c.score), c.score)
    return sorted(chosen, key=lambda c: (-best[group_of[c.key]], group_of[c.key], *_chronological(c)))


def _redundant(item: Packable, chosen: list[Packable], words: dict[str, set[str]], covered_events: set[str]) -> bool:
    """Already said: every raw event is in the context, or the words nearly repeat a chosen item with the same figures."""
    if item.raw_event_ids and set(item.raw_event_ids) <= covered_events:
        return True
    mine = words[item.key]
    for other in chosen:
        theirs = words[other.key]
        # Jaccard <= smaller / larger size: most pairs stop at this test, before any set is built.
        if mine and theirs and min(len(mine), len(theirs)) / max(len(mine), len(theirs)) >= REDUNDANT_JACCARD:
            shared = len(mine & theirs)
            if (shared / (len(mine) + len(theirs) - shared) >= REDUNDANT_JACCARD
                    and not any(ch.isdigit() for w in mine ^ theirs for ch in w)):  # another value or date is another fact
                return True
    return False


def render(items: Sequence[Packable]) -> str:
    """The context text: a ``[day]`` line whenever the day changes, then ``who: text`` per item."""
    lines: list[str] = []
    day: str | None = None
    for item in items:
        item_day = item.day()
        if item_day and item_day != day:
            day = item_day
            lines.append(day_line(item_day))
        lines.append(item.line())
    return "\n".join(lines)
