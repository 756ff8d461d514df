"""CaRB scoring of open information extraction tuples (Bhardwaj et al., EMNLP 2019).

Implemented from the paper's description: each gold tuple and each predicted
tuple are compared slot by slot on whitespace tokens (relation, first argument,
and the remaining arguments joined as one), giving a token precision and a token
recall per pair; the relation must share at least one token and the first two
argument slots must be present, else the pair scores zero. Recall takes, for every
gold tuple, its best-matching prediction; precision matches predictions to gold
tuples one to one, greedily by precision. Sentences are keyed without spaces,
punctuation or PTB bracket escapes so tokenisation differences do not split them.
This module only scores: it never extracts or reads files.
"""
from __future__ import annotations

import dataclasses
import re
import string
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

SAID_VERBS = ("said", "told", "added", "adds", "says")
BE_FORMS = frozenset({"be", "is", "am", "are", "was", "were", "been", "being"})
_PTB_ESCAPES = (("(", "-LRB-"), (")", "-RRB-"), ("[", "-LSB-"), ("]", "-RSB-"), ("{", "-LCB-"), ("}", "-RCB-"))
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


@dataclasses.dataclass(frozen=True)
class Tuple:
    """One n-ary extraction: a relation phrase and its arguments, as surface text."""

    relation: str
    args: tuple[str, ...]
    confidence: float = 1.0


@dataclasses.dataclass(frozen=True)
class Score:
    precision: float
    recall: float
    f1: float
    gold_tuples: int
    predicted_tuples: int


def sentence_key(sentence: str) -> str:
    """Tokenisation-proof sentence key: no spaces, no punctuation, PTB escapes undone."""
    s = sentence.replace(" ", "")
    for plain, escaped in _PTB_ESCAPES:
        s = s.replace(escaped, plain)
    return _PUNCT.sub("", s)


def read_gold(lines: Iterable[str]) -> dict[str, list[Tuple]]:
    """Gold tuples per sentence key from ``sentence TAB relation TAB arg1 TAB arg2 ...`` lines."""
    gold: dict[str, list[Tuple]] = defaultdict(list)
    for line in lines:
        fields = line.strip().split("\t")
        if len(fields) < 2:
            continue
        gold[sentence_key(fields[0].strip())].append(Tuple(fields[1].strip(), tuple(a.strip() for a in fields[2:])))
    return dict(gold)


def _overlap(gold: str, predicted: str) -> tuple[int, int, int]:
    """(matched tokens, gold tokens, predicted tokens), each predicted token used once."""
    pool = predicted.split()
    gold_words = gold.split()
    n_pred = len(pool)
    matched = 0
    for word in gold_words:
        if word in pool:
            matched += 1
            pool.remove(word)
    return matched, len(gold_words), n_pred


def _binary(args: Sequence[str]) -> list[str]:
    """First argument, then everything else as one slot: CaRB's lenient binary view."""
    return [args[0], " ".join(args[1:])] if len(args) >= 2 else list(args)


def _slot_match(relation_gold: str, args_gold: Sequence[str], relation_pred: str, args_pred: Sequence[str]) -> tuple[float, float]:
    pool = relation_pred.split()
    gold_words = relation_gold.split()
    matched = 0
    for word in gold_words:
        if word in pool:
            matched += 1
            pool.remove(word)
    if "be" in pool and any(w in BE_FORMS for w in gold_words):
        matched += 1  # a lemmatised "be" matches any form of it in the gold relation
    if matched == 0:
        return 0.0, 0.0
    hit_p = hit_r = matched
    den_p, den_r = len(relation_pred.split()), len(gold_words)
    for i, gold_arg in enumerate(args_gold):
        if i >= len(args_pred):
            if i < 2:
                return 0.0, 0.0
            den_r += len(gold_arg.split())
            continue
        m, g, p = _overlap(gold_arg, args_pred[i])
        hit_p += m
        hit_r += m
        den_p += p
        den_r += g
    return (hit_p / den_p if den_p else 0.0), (hit_r / den_r if den_r else 0.0)


def match(gold: Tuple, predicted: Tuple) -> tuple[float, float]:
    """Token (precision, recall) of ``predicted`` against ``gold``; reported speech may swap its arguments."""
    g_args, p_args = _binary(gold.args), _binary(predicted.args)
    straight = _slot_match(gold.relation, g_args, predicted.relation, p_args)
    if not any(v in gold.relation for v in SAID_VERBS) or len(predicted.args) < 2:
        return straight
    swapped = [" ".join(predicted.args[1:]), predicted.args[0]]
    return max(straight, _slot_match(gold.relation, g_args, predicted.relation, swapped))


def _sentence_counts(gold: Sequence[Tuple], predicted: Sequence[Tuple]) -> tuple[float, float]:
    """(precision numerator, recall numerator) for one sentence at a single confidence."""
    scores = [[match(g, p) for p in predicted] for g in gold]
    recall = sum(max((s[1] for s in row), default=0.0) for row in scores)
    precision = 0.0
    free_rows, free_cols = set(range(len(gold))), set(range(len(predicted)))
    for _ in range(min(len(gold), len(predicted))):
        best, bi, bj = -1.0, -1, -1
        for i in sorted(free_rows):
            for j in sorted(free_cols):
                if scores[i][j][0] > best:
                    best, bi, bj = scores[i][j][0], i, j
        free_rows.discard(bi)
        free_cols.discard(bj)
        precision += best
    return precision, recall


def score(gold: Mapping[str, Sequence[Tuple]], predicted: Mapping[str, Sequence[Tuple]]) -> Score:
    """CaRB precision, recall and F1 over gold sentences, every prediction at one confidence.

    Keys are ``sentence_key`` values; predictions for sentences without gold are ignored, as in CaRB.
    """
    p_num = r_num = 0.0
    p_den = r_den = 0
    for key, gold_tuples in gold.items():
        preds = list(predicted.get(key, ()))
        p, r = _sentence_counts(gold_tuples, preds)
        p_num += p
        r_num += r
        p_den += len(preds)
        r_den += len(gold_tuples)
    precision = p_num / p_den if p_den else 1.0
    recall = r_num / r_den if r_den else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return Score(precision, recall, f1, r_den, p_den)
