"""Cut one conversation's ordered units into episodes at surprise boundaries, incrementally.

The rule follows EM-LLM's event segmentation: a gap between two units
becomes a candidate boundary when its surprise exceeds the trailing mean by
``gamma`` standard deviations and peaks there; the candidate is then moved to
the cut of the local similarity graph with the lowest conductance (or highest
modularity). Surprise mixes three signals: how unlikely the unit's words are
under the tenant's adaptive language model with a cache of the open episode;
how far its static embedding lies from the episode's recent members (a kernel
density); and, after a few units of lookahead, how sharply the next units
turn away from the previous ones (the depth of the cohesion drop between the
two blocks, as in TextTiling), which catches a topic shift that one short
unit alone does not show. How readily a peak becomes a cut is calibrated per
conversation: the conversation's own running similarity between neighbouring
units and between units ``FAR_LAG`` apart says how fast its topic drifts, hence
how long its episodes should be; a conversation that dwells (a meeting on one
agenda item) gets a longer shortest episode and a higher threshold (a boundary
prior), one that hops (chit-chat) keeps the plain rule. Where topics dwell,
similarity peaks are flat and noisy (a committee member's follow-up reads as
unlike the answer before it), so there a surprise cut also needs a discourse
cue opening the new episode ("Okay, thank you. Now, ..."), the speakers' own
hand-over; conversations that hop, such as task dialogue, where "okay" grounds
turns inside a task, are never asked for one. Time gaps per source
family and explicit structure (a new thread, meeting or encounter) force a
boundary; idle timeouts and the end of a bounded run close the open episode.
All state (the open episode, the recent units awaiting their lookahead, the
conversation's drift statistics and the tenant model's) round-trips through
JSON, so a conversation split across runs is cut exactly as in one run. This
module segments only: it loads models through ``memtape.transforms`` and never
reads or writes the store.
"""
from __future__ import annotations

import dataclasses
import math
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from memtape.schemas.records import stable_id
from memtape.transforms.cues import cue_strength
from memtape.transforms.static_embed import StaticEmbeddings
from memtape.transforms.surprise import NgramSurprise, Predictor, Unit

GAMMA = 1.3  # a boundary needs surprise this many trailing standard deviations above the trailing mean
WINDOW = 50  # span, in units, of the exponentially weighted trailing window of each unit-level signal
BOUNDARY_WINDOW = 200  # span of the trailing window that scales the mixed boundary surprise: steadier
UNIT_WEIGHT = 0.5  # weight of the unit's own surprise beside the lookahead cohesion drop
COHESION_BEFORE = 2  # units before a gap, summed, in the cohesion comparison
COHESION_AFTER = 2  # units after a gap (the lookahead), summed
DEPTH_RADIUS = 3  # a cohesion drop's depth is measured against the highest cohesion this many gaps either side
WARMUP_UNITS = 8  # no surprise boundary until the tenant model has seen this many units
LM_WEIGHT = 0.1  # weight of the language-model surprise beside the embedding density (topic shifts live mostly in the latter)
KERNEL = 3.0  # von Mises-Fisher kernel concentration around each recent member, per spread of neighbour similarity
SPREAD_WINDOW = 1000  # units over which that spread is averaged: a property of the embedding, so slow
MIN_SIM_SPREAD = 0.05  # floor on that spread while the tenant model is young
RECENCY = 0.6  # weight decay per step back in the episode, so recent members dominate the density
TAIL_UNITS = 8  # latest members of the open episode that form the context of the next unit's surprise
RECENT_UNITS = 16  # latest units kept (with scores) for that context, the gaps awaiting lookahead and refinement
REFINE_BACK = 4  # units before the candidate that join the local similarity graph
REFINE_RADIUS = 1  # how far refinement may move a candidate boundary
REFINE_MARGIN = 0.4  # ... to a cut whose cost is lower than the candidate's by at least this share of it
MAX_CONDUCTANCE = 0.9  # a refined cut is kept only when the local graph splits at least this cleanly ...
MIN_MODULARITY = 0.0  # ... or, when refining by modularity, when its two blocks are this modular
FAR_LAG = 8  # units this far apart stand for "another topic" when measuring how fast a conversation drifts
CONVERSATION_WINDOW = 500  # span of a conversation's own running drift statistics (a plain mean until then)
DRIFT_PRIOR_UNITS = 20  # a conversation's drift estimate leans on the tenant's as if the tenant had this many units
MAX_EXPECTED_EPISODE = 32.0  # cap on the episode length a conversation that barely drifts implies
# the base threshold, the two drift-calibration knobs and where a cut starts to need a cue, chosen together on three
# genres with MiniLM sentence vectors (the pipeline's default) by benchmarks/sweep_segment.py (BENCHMARKS.md)
PRIOR_WEIGHT = 1.2  # threshold rise per log unit of that shortest episode: a boundary prior tied to the drift rate
EPISODE_SCALE = 64.0  # a surprise cut leaves at least (expected episode length)^2 / this many units in the episode
CUE_EPISODE = 8.0  # where the expected episode is at least this many units, a surprise cut needs a cue opening the next
# An episode becomes one memory that recall hands an LLM whole, so it must stay a readable, selectable size even where
# no topic boundary shows (a busy IRC channel of interleaved threads reads as one slowly drifting topic). Past either
# bound the episode is cut at its strongest scored gap. 96 units and 6,000 content tokens sit above the 90th
# percentile of gold topic segments in every dev genre (45 units, about 5,000 tokens in committee meetings).
MAX_EPISODE_UNITS = 192
MAX_EPISODE_TOKENS = 16000
HOUR = 3600.0
MAX_GAP_S: Mapping[str, float] = {  # a silence longer than this always starts a new episode
    "im": 1 * HOUR,
    "email": 72 * HOUR,
    "meeting": 0.25 * HOUR,
    "health": 30 * 24 * HOUR,
}
DEFAULT_MAX_GAP_S = 1 * HOUR


@dataclasses.dataclass(frozen=True)
class SegmenterConfig:
    """Tunables of the boundary rule; the defaults carry across chat, email, meetings and dialogue."""

    gamma: float = GAMMA
    window: int = WINDOW
    unit_weight: float = UNIT_WEIGHT
    lm_weight: float = LM_WEIGHT
    kernel: float = KERNEL
    recency: float = RECENCY
    refine: str = "conductance"
    episode_scale: float = EPISODE_SCALE
    prior_weight: float = PRIOR_WEIGHT
    cue_episode: float = CUE_EPISODE
    max_episode_units: int = MAX_EPISODE_UNITS
    max_episode_tokens: int = MAX_EPISODE_TOKENS
    max_gap_s: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(MAX_GAP_S))

    def gap_for(self, source_kind: str | None) -> float:
        return float(self.max_gap_s.get(source_kind or "", DEFAULT_MAX_GAP_S))


class _Trailing:
    """Exponentially weighted mean and variance over the last ``window`` values (plain average while young)."""

    def __init__(self, window: int, state: Sequence[float] = (0, 0.0, 0.0)) -> None:
        self.window = window
        self.n, self.mean, self.var = int(state[0]), float(state[1]), float(state[2])

    def z(self, x: float) -> float:
        return (x - self.mean) / math.sqrt(self.var) if self.n > 1 and self.var > 0 else 0.0

    def push(self, x: float) -> None:
        self.n += 1
        a = max(1.0 / self.n, 2.0 / (self.window + 1))
        d = x - self.mean
        self.mean += a * d
        self.var = (1 - a) * (self.var + a * d * d)

    def state(self) -> list[float]:
        return [self.n, self.mean, self.var]


class TenantModel:
    """What a tenant's stream has taught the segmenter: the predictor, token document frequencies, surprise scales."""

    def __init__(self, vocab_size: int, config: SegmenterConfig, predictor: Predictor | None = None,
                 state: Mapping[str, Any] | None = None) -> None:
        state = state or {}
        self.predictor = predictor or NgramSurprise(vocab_size, state.get("predictor"))
        self.doc_freq = np.zeros(vocab_size, dtype=np.int64)
        if "doc_freq" in state:
            self.doc_freq[np.asarray(state["doc_freq"]["ids"], dtype=np.int64)] = state["doc_freq"]["counts"]
        self.docs = int(state.get("docs", 0))
        stats = state.get("stats", {})
        self.emb = _Trailing(config.window, stats.get("emb", (0, 0.0, 0.0)))
        self.lm = _Trailing(config.window, stats.get("lm", (0, 0.0, 0.0)))
        self.mixed = _Trailing(config.window, stats.get("mixed", (0, 0.0, 0.0)))
        self.depth = _Trailing(BOUNDARY_WINDOW, stats.get("depth", (0, 0.0, 0.0)))
        self.boundary = _Trailing(BOUNDARY_WINDOW, stats.get("boundary", (0, 0.0, 0.0)))
        self.sim = _Trailing(SPREAD_WINDOW, stats.get("sim", (0, 0.0, 0.0)))
        self.near = _Trailing(SPREAD_WINDOW, stats.get("near", (0, 0.0, 0.0)))
        self.far = _Trailing(SPREAD_WINDOW, stats.get("far", (0, 0.0, 0.0)))

    def weights(self, ids: np.ndarray) -> np.ndarray:
        """Inverse document frequency over the tenant's own units: words this person always uses weigh little."""
        return np.log((self.docs + 1) / (self.doc_freq[ids] + 1)) + 1.0

    def learn(self, unit: Unit) -> None:
        self.predictor.learn(unit)
        self.doc_freq[np.unique(unit.ids)] += 1
        self.docs += 1

    def state(self) -> dict[str, Any]:
        nz = np.flatnonzero(self.doc_freq)
        return {
            "predictor": self.predictor.state(),
            "doc_freq": {"ids": nz.tolist(), "counts": self.doc_freq[nz].tolist()},
            "docs": self.docs,
            "stats": {"emb": self.emb.state(), "lm": self.lm.state(), "mixed": self.mixed.state(),
                      "depth": self.depth.state(), "boundary": self.boundary.state(), "sim": self.sim.state(),
                      "near": self.near.state(), "far": self.far.state()},
        }


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _cosine(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]) -> float:
    """Cosine between the summed vectors of two blocks of units (0 when either is empty or all zeros)."""
    a = np.sum([e["unit"].vector for e in before], axis=0) if before else None
    b = np.sum([e["unit"].vector for e in after], axis=0) if after else None
    if a is None or b is None:
        return 0.0
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else 0.0


def _blend(own: _Trailing, tenant: _Trailing) -> float | None:
    """The conversation's running mean, shrunk toward the tenant's by ``DRIFT_PRIOR_UNITS`` pseudo-units."""
    prior = min(tenant.n, DRIFT_PRIOR_UNITS)
    if own.n + prior == 0:
        return None
    return (own.n * own.mean + prior * tenant.mean) / (own.n + prior)


def conductance(affinity: np.ndarray, cut: int) -> float:
    """Edge weight crossing the cut over the smaller side's volume: low means two well-separated groups."""
    crossing = affinity[:cut, cut:].sum()
    vol_a, vol_b = affinity[:cut].sum(), affinity[cut:].sum()
    smaller = min(vol_a, vol_b)
    return float(crossing / smaller) if smaller > 0 else 1.0


def modularity(affinity: np.ndarray, cut: int) -> float:
    """Newman modularity of the two-block split at ``cut``: high means denser inside blocks than chance."""
    degree = affinity.sum(1)
    total = degree.sum()
    if total <= 0:
        return 0.0
    same = np.zeros_like(affinity, dtype=bool)
    same[:cut, :cut] = True
    same[cut:, cut:] = True
    return float(((affinity - np.outer(degree, degree) / total) * same).sum() / total)


# each refinement: a cost to minimise over candidate cuts, and the highest cost a kept cut may have
_REFINERS = {
    "conductance": (conductance, MAX_CONDUCTANCE),
    "modularity": (lambda a, c: -modularity(a, c), -MIN_MODULARITY),
}


class EpisodeSegmenter:
    """Segments one conversation incrementally; ``feed`` returns the episodes closed so far as EPISODES rows."""

    def __init__(self, embeddings: StaticEmbeddings, config: SegmenterConfig = SegmenterConfig(),
                 model: TenantModel | None = None, state: Mapping[str, Any] | None = None,
                 predictor: Predictor | None = None) -> None:
        if config.refine not in _REFINERS:
            raise ValueError(f"refine must be one of {sorted(_REFINERS)}, not {config.refine!r}")
        state = state or {}
        self.embeddings = embeddings
        self.config = config
        self.model = model or TenantModel(embeddings.vocab_size, config, predictor, state.get("model"))
        self.key: dict[str, Any] = dict(state.get("key", {}))
        self.members: list[dict[str, Any]] = list(state.get("members", []))
        # the latest units, oldest first, each with its own surprise and the gap before it as that gets scored and decided
        self.recent: list[dict[str, Any]] = [dict(r, unit=self._unit_from_state(r["unit"])) for r in state.get("recent", [])]
        self.last_time = _time(state.get("last_time"))
        drift = state.get("drift", {})  # absent in states saved before drift was measured: start afresh
        self.near = _Trailing(CONVERSATION_WINDOW, drift.get("near", (0, 0.0, 0.0)))
        self.far = _Trailing(CONVERSATION_WINDOW, drift.get("far", (0, 0.0, 0.0)))

    # -- public API ---------------------------------------------------------------------------

    def feed(self, units: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Add ordered units of this conversation; return the episodes they closed."""
        batch = list(units)
        ids = self.embeddings.token_ids([u.get("text") or "" for u in batch])
        closed: list[dict[str, Any]] = []
        for raw, token_ids in zip(batch, ids):
            closed.extend(self._step(raw, token_ids))
        return closed

    def close_idle(self, now: datetime) -> list[dict[str, Any]]:
        """Close the open episode when no unit arrived within its source family's gap before ``now``."""
        if not self.members or self.last_time is None:
            return []
        now_t = _time(now)
        assert now_t is not None  # a datetime in, a datetime out
        idle = (now_t - self.last_time).total_seconds()
        if idle <= self.config.gap_for(self.key.get("source_kind")):
            return []
        return self._close_all("idle", idle / self.config.gap_for(self.key.get("source_kind")))

    def flush(self) -> list[dict[str, Any]]:
        """Close everything at the end of a bounded run."""
        return self._close_all("end", None)

    def state(self, include_model: bool = True) -> dict[str, Any]:
        """JSON-able state: conversation key, open episode, the recent units and the tenant model.

        Leave the model out when one ``TenantModel`` serves many conversations and is saved once per tenant.
        """
        state = {
            "key": dict(self.key),
            "members": [dict(m) for m in self.members],
            "recent": [dict(r, unit={"event_id": r["unit"].event_id, "text": r["unit"].text, "ids": r["unit"].ids.tolist(),
                                     "vector": r["unit"].vector.tolist()}) for r in self.recent],
            "last_time": self.last_time.isoformat() if self.last_time else None,
            "drift": {"near": self.near.state(), "far": self.far.state()},
        }
        if include_model:
            state["model"] = self.model.state()
        return state

    @property
    def tail(self) -> list[Unit]:
        """The open episode's latest members (at most ``TAIL_UNITS``): the context its next unit is judged against."""
        keep = min(TAIL_UNITS, len(self.members))
        return [e["unit"] for e in self.recent[len(self.recent) - keep :]] if keep else []

    # -- one unit -------------------------------------------------------------------------------

    @staticmethod
    def _unit_from_state(u: Mapping[str, Any]) -> Unit:
        return Unit(u["event_id"], u["text"], np.asarray(u["ids"], dtype=np.int64),
                    np.asarray(u["vector"], dtype=np.float32))

    def _step(self, raw: Mapping[str, Any], token_ids: np.ndarray) -> list[dict[str, Any]]:
        if not self.key:
            self.key = {k: raw.get(k) for k in ("tenant", "conversation_id", "source_kind")}
        when = _time(raw.get("event_time"))
        unit = Unit(str(raw["event_id"]), raw.get("text") or "", token_ids, self._vector(raw, token_ids), when,
                    raw.get("sender"))
        closed: list[dict[str, Any]] = []
        forced = self._forced(raw, when)
        score = self._surprise(unit)
        self._measure_drift(unit)
        if forced is not None and self.members:
            closed.extend(self._close_all(*forced))
        self.recent = (self.recent + [{"unit": unit, "surprise": score, "first": not self.members,
                                       "cohesion": None, "score": None, "decided": not self.members}])[-RECENT_UNITS:]
        self.members.append({"event_id": unit.event_id, "event_time": when.isoformat() if when else None,
                             "surprise": score, "tokens": len(token_ids)})
        self.model.learn(unit)
        if when is not None:
            self.last_time = when
        closed.extend(self._advance(final=False))
        if self._too_long():
            closed.extend(self._cut_strongest())
        return closed

    def _too_long(self) -> bool:
        return (len(self.members) > self.config.max_episode_units
                or sum(m.get("tokens", 0) for m in self.members) > self.config.max_episode_tokens)

    def _cut_strongest(self) -> list[dict[str, Any]]:
        """Close an over-long episode at its highest-scoring gap, so the forced cut still falls where the topic turns most.

        Every member's ``surprise`` holds its gap's score once scored; the latest members still
        await their lookahead and are not candidates, nor is the first quarter, so the cut
        never leaves a sliver of an episode behind.
        """
        pending = sum(1 for e in self.recent[-len(self.members):] if e["score"] is None)
        last = max(2, len(self.members) - pending)
        gaps = range(min(max(1, len(self.members) // 4), last - 1), last)
        cut = max(gaps, key=lambda i: (self.members[i]["surprise"], i))
        return [self._close_before(cut, "length", float(self.members[cut]["surprise"]))]

    def _vector(self, raw: Mapping[str, Any], token_ids: np.ndarray) -> np.ndarray:
        """The unit's sentence embedding when the caller already has one, else its static-token vector."""
        given = raw.get("embedding")
        if given is None:
            return self.embeddings.vector(token_ids, self.model.weights(token_ids))
        v = np.asarray(given, dtype=np.float32)
        norm = float(np.linalg.norm(v))
        return v / norm if norm > 0 else v

    def _forced(self, raw: Mapping[str, Any], when: datetime | None) -> tuple[str, float] | None:
        if raw.get("structure_break") and self.members:
            return ("structure", 1.0)
        if when is not None and self.last_time is not None:
            gap = (when - self.last_time).total_seconds()
            limit = self.config.gap_for(self.key.get("source_kind"))
            if gap > limit:
                return ("time_gap", gap / limit)
        return None

    def _surprise(self, unit: Unit) -> float:
        """The unit's own mixed surprise against the open episode, in trailing standard deviations above the mean."""
        m = self.model
        context = self.tail
        if context:
            sims = np.stack([u.vector for u in context]) @ unit.vector
            ages = np.arange(len(context) - 1, -1, -1)
            w = self.config.recency ** ages
            density = float((w * np.exp(self._kernel() * (sims - 1.0))).sum() / w.sum())
            m.sim.push(float(sims[-1]))
            s_emb = -math.log(max(density, 1e-12))
        else:
            s_emb = 0.0
        s_lm = m.predictor.surprise(unit, context)
        mixed = m.emb.z(s_emb) + self.config.lm_weight * m.lm.z(s_lm)
        score = m.mixed.z(mixed)
        if context:
            m.emb.push(s_emb)
            m.lm.push(s_lm)
            m.mixed.push(mixed)
        return score

    def _measure_drift(self, unit: Unit) -> None:
        """Similarity of the unit to its neighbour and to the unit ``FAR_LAG`` back, for the conversation and tenant."""
        r = self.recent
        for own, tenant, lag in ((self.near, self.model.near, 1), (self.far, self.model.far, FAR_LAG)):
            if len(r) >= lag:
                sim = float(r[-lag]["unit"].vector @ unit.vector)
                own.push(sim)
                tenant.push(sim)

    def expected_episode(self) -> float:
        """Episode length, in units, that this conversation's rate of topic drift implies.

        Units of one topic stay about as similar at any distance, while a topic change
        pulls distant units apart: the gap between neighbour and far similarity, against
        the room left above far similarity, measures how fast the topic moves. A meeting
        dwelling on an agenda item barely drifts, a chit-chat hops every few turns. A young
        conversation leans on its tenant's estimate.
        """
        near, far = (_blend(own, tenant) for own, tenant in ((self.near, self.model.near), (self.far, self.model.far)))
        if near is None or far is None:
            return 0.0
        return float(min(MAX_EXPECTED_EPISODE, (1.0 - far) / max(near - far, (1.0 - far) / MAX_EXPECTED_EPISODE)))

    def shortest_episode(self) -> int:
        """Fewest units a surprise cut may leave in the closed episode: few where topics hop, many where they dwell.

        It grows with the square of the expected episode length because a slowly drifting
        conversation has both longer topics and flatter, noisier gap scores to cut on.
        """
        return round(self.expected_episode() ** 2 / self.config.episode_scale)

    def threshold(self) -> float:
        """Surprise a cut needs: ``gamma``, raised by the log prior odds against a boundary where topics dwell."""
        return self.config.gamma + self.config.prior_weight * math.log(max(1, self.shortest_episode()))

    def _cued(self, unit: Unit) -> bool:
        """Whether a surprise peak before ``unit`` may cut: always where topics hop, only at a cue where they dwell."""
        return self.expected_episode() < self.config.cue_episode or cue_strength(unit.text) > 0

    def _kernel(self) -> float:
        """Kernel concentration in units of the tenant's spread of neighbour similarity, so it fits any embedding."""
        spread = math.sqrt(self.model.sim.var) if self.model.sim.n > 1 else 0.0
        return self.config.kernel / max(spread, MIN_SIM_SPREAD)

    # -- gaps: lookahead, scores and cuts -----------------------------------------------------

    def _advance(self, final: bool) -> list[dict[str, Any]]:
        """Score every gap whose lookahead is complete (all of them when ``final``), then cut at surprise peaks."""
        r, n = self.recent, len(self.recent)
        for k, e in enumerate(r):
            if e["first"] or e["cohesion"] is not None:
                continue
            if not final and k + COHESION_AFTER > n:
                break
            e["cohesion"] = _cosine(r[max(0, k - COHESION_BEFORE) : k], r[k : k + COHESION_AFTER])
        for k, e in enumerate(r):
            if e["first"] or e["score"] is not None:
                continue
            if not final and (k + DEPTH_RADIUS >= n or r[k + DEPTH_RADIUS]["cohesion"] is None):
                break
            self._score_gap(k)
        closed: list[dict[str, Any]] = []
        scores = [e["score"] for e in r]
        for k, e in enumerate(r):
            if e["decided"]:
                continue
            if e["score"] is None or (k + 1 < n and scores[k + 1] is None):
                break  # a gap is decided once it and the next one are scored
            e["decided"] = True
            peak = e["score"] >= max(s for s in scores[max(0, k - 1) : k + 2] if s is not None)
            if peak and e["score"] > self.threshold() and self.model.docs >= WARMUP_UNITS and self._cued(e["unit"]):
                closed.extend(self._cut_near(k, e["score"]))
        return closed

    def _score_gap(self, k: int) -> None:
        """Mix the depth of the cohesion drop before unit ``k`` of ``recent`` with that unit's own surprise."""
        r, m = self.recent, self.model
        cohesion = [e["cohesion"] for e in r[max(0, k - DEPTH_RADIUS) : k + DEPTH_RADIUS + 1]]
        middle = min(k, DEPTH_RADIUS)
        left = [c for c in cohesion[: middle + 1] if c is not None]
        right = [c for c in cohesion[middle:] if c is not None]
        depth = (max(left) - cohesion[middle]) + (max(right) - cohesion[middle])
        mixed = m.depth.z(depth) + self.config.unit_weight * r[k]["surprise"]
        m.depth.push(depth)
        score = m.boundary.z(mixed)
        m.boundary.push(mixed)
        r[k]["score"] = score
        member = len(self.members) - (len(r) - k)
        if member >= 0:
            self.members[member]["surprise"] = score

    def _cut_near(self, k: int, score: float) -> list[dict[str, Any]]:
        """Move a boundary before unit ``k`` of ``recent`` to the best local graph cut and close the episode there."""
        n = len(self.recent)
        first_member = n - len(self.members)
        lo = max(first_member, k - REFINE_BACK, 0)
        shortest = first_member + self.shortest_episode()
        cuts = range(max(lo + 1, k - REFINE_RADIUS, shortest), min(n - 1, k + REFINE_RADIUS) + 1)
        if not cuts:
            return []
        vectors = np.stack([e["unit"].vector for e in self.recent[lo:]])
        affinity = np.exp(self._kernel() * (vectors @ vectors.T - 1.0))
        np.fill_diagonal(affinity, 0.0)
        cost, limit = _REFINERS[self.config.refine]
        at = {c: cost(affinity, c - lo) for c in cuts}
        best = min(cuts, key=lambda c: (at[c], abs(c - k)))
        if k in at and at[best] > at[k] - REFINE_MARGIN * abs(at[k]):  # the peak stays unless a cut nearby is clearly cleaner
            best = k
        if at[best] > limit:
            return []
        return [self._close_before(best - first_member, "surprise", score)]

    # -- closing episodes ---------------------------------------------------------------------

    def _close_before(self, cut: int, signal: str, score: float | None) -> dict[str, Any]:
        row = self._row(self.members[:cut], signal, score)
        self.members = self.members[cut:]
        return row

    def _close_all(self, signal: str, score: float | None) -> list[dict[str, Any]]:
        closed = self._advance(final=True)
        if self.members:
            closed.append(self._close_before(len(self.members), signal, score))
        self.recent = []
        return closed

    def _row(self, members: list[dict[str, Any]], signal: str, score: float | None) -> dict[str, Any]:
        times = [t for t in (_time(m["event_time"]) for m in members) if t is not None]
        tenant, conversation = self.key.get("tenant"), self.key.get("conversation_id")
        return {
            "tenant": tenant,
            "episode_id": stable_id(tenant, conversation, members[0]["event_id"]),
            "conversation_id": conversation,
            "source_kind": self.key.get("source_kind"),
            "start_time": min(times) if times else None,
            "end_time": max(times) if times else None,
            "member_ids": [m["event_id"] for m in members],
            "surprise": [float(m["surprise"]) for m in members],
            "boundary_score": score,
            "boundary_signal": signal,
            "dropped_ids": [],
            "dropped_summary": None,
        }
