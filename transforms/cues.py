"""Discourse cue phrases: the words with which speakers close one topic and open the next.

Similarity misses the topic changes a conversation manages out loud: a chair who
closes one member's questions and hands the floor to the next, a caller who
thanks and turns to a new task. Cue phrases are the classic signal for those
across genres (Hirschberg & Litman 1993; Passonneau & Litman 1997; Galley et al.
2003 on meetings). The lexicon and the feature's form were fixed from that
literature before they were scored on any gold segmentation (commit 98ae1cc) and
not changed after:

- a closing acknowledgement among the unit's first ``ACK_WORDS`` words: the
  pre-closing tokens of an exchange (okay, all right, right; Schegloff & Sacks
  1973), thanks, and the assessments that end one (great, good, fine, perfect,
  excellent). Placed first, they close what came before.
- a transition marker within the unit's first ``OPENING_WORDS`` words, where a
  turn's topic-management move sits: now, next, anyway, finally, by the way,
  moving / move on, turn to, another question, one more question, the final,
  let's talk about, speaking of. "so" counts only as the unit's first word
  (elsewhere it is mostly an intensifier); "well" is left out (it mostly
  prefaces a dispreferred answer, not a new topic).

A unit's cue strength is the number of the two kinds present (0, 1 or 2: a
hand-over usually does both). Names are not cues. In task dialogue the same
acknowledgements open grounding turns inside a task, so the segmenter asks for a
cue only where a conversation's topics dwell (``memtape.transforms.segment``).
"""
from __future__ import annotations

import re

ACK_WORDS = 3  # a closing acknowledgement opens the unit: "Okay, thank you." / "Right, thanks."
OPENING_WORDS = 12  # a transition marker sits in the turn's first clause or two
CLOSING_ACKS: tuple[tuple[str, ...], ...] = (
    ("okay",), ("ok",), ("alright",), ("all", "right"), ("right",), ("thank", "you"), ("thanks",),
    ("great",), ("good",), ("fine",), ("perfect",), ("excellent",),
)
TRANSITIONS: tuple[tuple[str, ...], ...] = (
    ("now",), ("next",), ("anyway",), ("anyways",), ("finally",), ("by", "the", "way"), ("moving", "on"),
    ("move", "on"), ("turn", "to"), ("another", "question"), ("one", "more", "question"), ("the", "final"),
    ("let's", "talk", "about"), ("speaking", "of"),
)
INITIAL_TRANSITIONS: tuple[tuple[str, ...], ...] = (("so",),)  # markers only in first position
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def _has(words: list[str], phrases: tuple[tuple[str, ...], ...], within: int) -> bool:
    """Whether one of ``phrases`` starts within the first ``within`` words."""
    return any(tuple(words[i : i + len(p)]) == p for p in phrases for i in range(min(within, len(words))))


def cue_parts(text: str) -> tuple[bool, bool]:
    """Whether the unit opens with a closing acknowledgement, and whether its opening holds a transition marker."""
    words = _words(text)
    closing = _has(words, CLOSING_ACKS, ACK_WORDS)
    transition = _has(words, TRANSITIONS, OPENING_WORDS) or _has(words, INITIAL_TRANSITIONS, 1)
    return closing, transition


def cue_strength(text: str) -> int:
    """0, 1 or 2: a closing acknowledgement opening the unit, a transition marker in its opening, or both."""
    return sum(cue_parts(text))
