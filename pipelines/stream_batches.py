"""Derivation micro-batches of the streaming job: landed raw rows in, every derived table out, checkpointed.

Every Kafka partition is its own checkpoint in ``pipeline_state``: the next
offset whose derivation is durable and the generation of the state of the
conversations it carries (open episodes, dedupe sketches). A micro-batch runs
``BuildMemories`` once (a bounded Beam run) over raw rows already landed,
lands the derived rows (idempotent keyed writes), then commits each partition's
checkpoint. Rows below a partition's stored offset are skipped, so the store,
not Kafka, decides where derivation resumes: no loss and no duplicate rows.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any, Callable, Collection, NamedTuple

import apache_beam as beam

from memtape.connectors.beam_io import RAW, ReadFromLance
from memtape.connectors.lance_store import Store, any_of
from memtape.pipelines.beam_introspection import memoise_introspection, with_reused_views
from memtape.pipelines.derive import land_tables
from memtape.transforms.segment_episodes import conversation_key
from memtape.pipelines.memory import BuildMemories, StateTarget
from memtape.pipelines.state import (Checkpoint, ReadCarriedState, carried_conversations, carried_where,
                                     commit_checkpoint, load_checkpoint, next_generation, prune_states)
from memtape.schemas.records import ConversationKey

STREAM_TENANT = "_stream"  # checkpoint rows of the stream job belong to no one tenant
DEFAULT_IDLE_TIMEOUT_S = 300.0
PRUNE_EVERY_BATCHES = 50
PREPARE_AFTER = 0.5  # share of the idle timeout after which a quiet conversation's close is prepared (not landed)


@dataclasses.dataclass
class StreamStats:
    batches: int = 0
    events: int = 0
    skipped: int = 0
    tombstoned: int = 0  # replayed records of a deleted tenant or source, not landed
    dead_lettered: int = 0
    flushed: int = 0
    derive_s: float = 0.0  # wall seconds spent deriving micro-batches (derive_s / batches: the time one takes)
    close_batches: int = 0  # of ``batches``, those that only closed idle conversations
    close_s: float = 0.0  # of ``derive_s``, the seconds those took (close_s / close_batches: a close's own time)
    prepare_batches: int = 0  # runs that prepared closes ahead of their deadline (landing nothing; not in ``batches``)
    prepare_s: float = 0.0  # the seconds those took (not in ``derive_s``)


class Landed(NamedTuple):
    """A raw_events row already durable in the store, and the partition position it came from."""

    checkpoint: str
    offset: int
    row: dict
    received: float | None = None  # time.monotonic() when the consumer got it; None: when its micro-batch runs


def checkpoint_name(group: str, topic: str, partition: int) -> str:
    return f"stream:{group}:{topic}:{partition}"


def _scope_of(checkpoint_of_conversation: dict[str, str]) -> Callable[[dict], str]:
    """Dedupe and entity-resolution scope of a row: its tenant within the partition that carries its conversation."""
    def scope(row: dict) -> str:
        return ConversationKey(row["tenant"], checkpoint_of_conversation.get(conversation_key(row), "")).encode()

    return scope


@dataclasses.dataclass
class _OpenConversation:
    checkpoint: str  # the partition checkpoint that carries the conversation's state
    arrived: float  # when this process last received a message of it, or took over its partition (monotonic)
    prepared: bool = False  # its close was rehearsed since ``arrived``: the close's vectors are in this process's cache


class MicroBatcher:
    """Derives each micro-batch of landed rows and closes idle conversations, advancing their partitions' checkpoints.

    The batcher keeps in memory which conversations of its partitions have an
    open episode, so a micro-batch reads and ships the carried state of only
    the conversations it touches: the cost of a batch follows its size, not
    the history of the stream. Every micro-batch is a Beam run of the same
    graph, so Beam's introspection of it is memoised for the process
    (``beam_introspection``): that was most of a small batch's cost. A close
    is rehearsed before its deadline (``prepare_quiet``), so at the deadline
    its MiniLM vectors and parses are this process's cache hits.
    """

    def __init__(self, store: Store, options: Any, idle_timeout_s: float, stats: StreamStats) -> None:
        memoise_introspection()
        self.store = store
        self.options = with_reused_views(options)
        self.idle_timeout_s = idle_timeout_s
        self.stats = stats
        self._open: dict[str, _OpenConversation] = {}  # conversation key -> where and since when it is open
        self._followed: set[str] = set()  # checkpoints whose open conversations are in _open

    def step(self, landed: list[Landed], assigned: set[str], waiting: Collection[str] = ()) -> None:
        """Close the conversations gone idle and prepare the closes coming (``tend``), then derive ``landed``.

        ``assigned`` names the checkpoints of the partitions this process holds;
        ``waiting`` the conversation keys of rows received but not handed over
        yet. Closes go first and alone, so a conversation's memory never waits
        for (nor pays for) the derivation of other conversations' new rows.
        """
        self.tend(assigned | {item.checkpoint for item in landed},
                  {*waiting, *(conversation_key(item.row) for item in landed)})
        self.derive(landed, assigned)

    def tend(self, assigned: set[str], waiting: Collection[str] = ()) -> None:
        """Close the conversations gone idle (``close_idle``), then prepare the closes of the quiet ones (``prepare_quiet``)."""
        self.close_idle(assigned, waiting)
        self.prepare_quiet(assigned, waiting)

    def next_close_at(self, waiting: Collection[str] = ()) -> float | None:
        """When (``time.monotonic()``) the first open conversation without rows in ``waiting`` goes idle; None: none open."""
        return min((self._open[key].arrived + self.idle_timeout_s for key in self._quiet(waiting, time.monotonic())),
                   default=None)

    def _quiet(self, waiting: Collection[str], now: float, since: float = -math.inf,
               until: float = math.inf) -> dict[str, str]:
        """The open conversations without rows in ``waiting``, quiet at ``now`` for ``since`` seconds or more and less
        than ``until``: conversation key -> its checkpoint (what ``close_idle``, ``prepare_quiet`` and
        ``next_close_at`` each select)."""
        busy = set(waiting)
        return {key: o.checkpoint for key, o in self._open.items()
                if key not in busy and since <= now - o.arrived < until}

    def _close(self, conversations: dict[str, str], land: bool) -> None:
        """One Beam run that closes ``conversations`` (key -> checkpoint); ``land=False`` rehearses it."""
        checkpoints = [load_checkpoint(self.store, STREAM_TENANT, name) for name in sorted(set(conversations.values()))]
        self._run(checkpoints, [], conversations, {}, frozenset(conversations), land=land)

    def close_idle(self, assigned: set[str], waiting: Collection[str] = ()) -> int:
        """One micro-batch that closes the open conversations idle for ``idle_timeout_s``; how many it closed.

        Idleness is measured in processing time, since this process received the
        conversation's last message (not since derivation reached it, which may
        lag) or took over its partition, so replaying a historical backlog does
        not close every episode at each micro-batch. A conversation with rows in
        ``waiting`` (received, not derived yet) is not idle: its rows come first.
        """
        now = time.monotonic()
        self._follow(assigned)
        idle = self._quiet(waiting, now, self.idle_timeout_s)
        if not idle:
            return 0
        self._close(idle, land=True)
        for key in idle:
            del self._open[key]
        took = time.monotonic() - now
        self.stats.batches += 1
        self.stats.close_batches += 1
        self.stats.derive_s = round(self.stats.derive_s + took, 3)
        self.stats.close_s = round(self.stats.close_s + took, 3)
        self.stats.flushed += len(idle)
        return len(idle)

    def prepare_quiet(self, assigned: set[str], waiting: Collection[str] = ()) -> int:
        """Rehearse the close of the open conversations quiet for ``PREPARE_AFTER`` of the idle timeout; how many.

        A rehearsal is the close's own Beam run with nothing landed and no
        checkpoint moved, so it changes no table and no state: what it leaves
        behind is this process's caches, above all the memory and piece vectors
        (the close's MiniLM, most of its time), keyed by text. If no message
        joins the conversation before its deadline, the real close computes the
        same texts and finds their vectors; if one does, nothing is lost but
        the rehearsal's time. Nothing closes earlier than it did before.
        """
        now = time.monotonic()
        self._follow(assigned)
        quiet = {key: name for key, name in self._quiet(waiting, now, PREPARE_AFTER * self.idle_timeout_s,
                                                         self.idle_timeout_s).items() if not self._open[key].prepared}
        if not quiet:
            return 0
        self._close(quiet, land=False)
        for key in quiet:
            self._open[key].prepared = True
        self.stats.prepare_batches += 1
        self.stats.prepare_s = round(self.stats.prepare_s + time.monotonic() - now, 3)
        return len(quiet)

    def derive(self, landed: list[Landed], assigned: set[str]) -> None:
        """One micro-batch of ``landed`` rows above their partition's stored offset; it closes no idle conversation."""
        now = time.monotonic()
        self._follow(assigned | {item.checkpoint for item in landed})
        checkpoints = {name: load_checkpoint(self.store, STREAM_TENANT, name) for name in {item.checkpoint for item in landed}}
        rows: list[dict] = []
        owner: dict[str, str] = {}
        received: dict[str, float] = {}
        next_offsets: dict[str, int] = {}
        for item in landed:
            if item.offset < checkpoints[item.checkpoint].progress.get("next_offset", 0):
                continue  # derived before: the raw landing already skips these, this guards a rebalance race
            rows.append(item.row)
            key = conversation_key(item.row)
            owner[key] = item.checkpoint
            at = now if item.received is None else item.received
            received[key] = max(received.get(key, at), at)
            next_offsets[item.checkpoint] = max(next_offsets.get(item.checkpoint, 0), item.offset + 1)
        if rows:
            self._run([checkpoints[n] for n in sorted(next_offsets)], rows, owner, next_offsets, frozenset())
            self.stats.batches += 1
            self.stats.derive_s = round(self.stats.derive_s + time.monotonic() - now, 3)
        self._open.update({key: _OpenConversation(name, received[key]) for key, name in owner.items()})
        self.stats.events += len(rows)

    def _follow(self, names: set[str]) -> None:
        """Track the open conversations of newly held partitions; forget those of partitions handed away.

        A partition taken over may hold state rows of a run that died before
        its checkpoint commit; they are deleted first, or the next commit (a
        higher generation) would make them count.
        """
        now = time.monotonic()
        for name in names - self._followed:
            checkpoint = load_checkpoint(self.store, STREAM_TENANT, name)
            prune_states(self.store, checkpoint)
            if not checkpoint.generation:
                continue
            open_units = {key: ids for key, payload in carried_conversations(self.store, checkpoint).items()
                          if (ids := _open_event_ids(payload))}
            closed = _closed_by_a_dead_run(self.store, open_units)
            if closed:  # close them again at once, with the same members, before any new message can join them
                self._run([checkpoint], [], dict.fromkeys(closed, name), {}, frozenset(closed))
            for key in open_units.keys() - closed:
                self._open[key] = _OpenConversation(name, now)
        for key in [k for k, o in self._open.items() if o.checkpoint not in names]:
            del self._open[key]
        self._followed = set(names)

    def _run(self, checkpoints: list[Checkpoint], rows: list[dict], checkpoint_of: dict[str, str],
             next_offsets: dict[str, int], flush_keys: frozenset[str], land: bool = True) -> None:
        """One bounded Beam run over ``rows`` and the conversations in ``flush_keys``; ``checkpoint_of`` maps every
        conversation key involved to its partition checkpoint. ``land=False`` rehearses: the same run, its outputs
        dropped and no checkpoint committed."""
        generation = next_generation(max(c.generation for c in checkpoints))
        scope_of = _scope_of(checkpoint_of)
        # every conversation involved, idle ones too: their closing episodes resolve entities in their partition's scope
        scopes = {scope_of(dataclasses.asdict(ConversationKey.decode(key))): name for key, name in checkpoint_of.items()}
        target = StateTarget(checkpoints[0].name, generation, {**checkpoint_of, **scopes})
        landed = any_of("event_id", sorted({r["event_id"] for r in rows}))
        with beam.Pipeline(options=self.options) as p:
            raw = p | "Batch" >> ReadFromLance(RAW, self.store.home, self.store.storage_options, landed)
            carried = p | "Carried" >> ReadCarriedState(self.store, carried_where(checkpoints, {*checkpoint_of, *scopes}))
            outputs = {"raw": raw, "carried": carried} | "BuildMemories" >> BuildMemories(
                target, False, None, flush_keys, scope_of)
            if land:
                land_tables(outputs, self.store)
        if not land:
            return
        for checkpoint in checkpoints:
            commit_checkpoint(self.store, Checkpoint(checkpoint.name, STREAM_TENANT, generation, {
                "next_offset": next_offsets.get(checkpoint.name, checkpoint.progress.get("next_offset", 0))}))
        if self.stats.batches % PRUNE_EVERY_BATCHES == 0:
            for checkpoint in checkpoints:
                prune_states(self.store, Checkpoint(checkpoint.name, STREAM_TENANT, generation))


def _open_event_ids(payload: str) -> set[str]:
    """The raw events a conversation's carried segmenter state holds open, kept or dropped."""
    state = json.loads(payload)
    return {u["event_id"] for u in (*state.get("units", ()), *state.get("dropped", ()))}


def _closed_by_a_dead_run(store: Store, open_units: dict[str, set[str]]) -> set[str]:
    """Conversations whose committed state holds units open that an episode already contains.

    Only a run that died between landing its rows and committing its checkpoint
    leaves such an episode: it closed the conversation (idle, in processing
    time). A replay that sees more messages by then would close it with other
    members, changing an episode readers already saw, or, split differently,
    leave a raw event in two episodes. Closing it again at once, before any
    new message joins, gives the same episodes with the same ids.
    """
    by_conversation = {dataclasses.astuple(ConversationKey.decode(key)): key for key in open_units}
    where = any_of("conversation_id", sorted({conversation for _, conversation in by_conversation}))
    closed: set[str] = set()
    for episode in store.read("episodes", where=where, columns=["tenant", "conversation_id", "member_ids"]).to_pylist():
        key = by_conversation.get((episode["tenant"], episode["conversation_id"] or ""))
        if key is not None and open_units[key] & set(episode["member_ids"]):
            closed.add(key)
    return closed
