"""Tombstones: what a deletion leaves so that replaying older records cannot land them again.

A tombstone names a tenant (every source) or one source URI of a tenant, and
the deletion time. Kafka still holds published records until its retention
expires, so the Kafka range backfill and the stream skip an event whose
``ingest_time`` (when its connector read it, before it was published) is
before a matching tombstone; records read after the deletion land normally.
Reading the source files again is a new import and is never blocked. This
module writes only the ``tombstones`` table.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime

from memtape.connectors.lance_store import Store, column_is
from memtape.schemas.records import RawEvent, stable_id


def bury(store: Store, tenant: str, source_uri: str | None, deleted_time: datetime) -> None:
    """Record the deletion of ``tenant``'s data (of one source when ``source_uri`` is given) at ``deleted_time``."""
    store.upsert("tombstones", [{"tenant": tenant, "tombstone_id": stable_id(tenant, source_uri or ""),
                                 "source_uri": source_uri, "deleted_time": deleted_time}])


@dataclasses.dataclass(frozen=True)
class Tombstones:
    """Deletion times by (tenant, source URI or None), small enough to ship to every worker."""

    times: dict[tuple[str, str | None], datetime]

    @classmethod
    def load(cls, store: Store, tenant: str | None = None) -> "Tombstones":
        """Every tombstone, or one tenant's."""
        where = column_is("tenant", tenant) if tenant is not None else None
        rows = store.read("tombstones", where=where, columns=["tenant", "source_uri", "deleted_time"]).to_pylist()
        return cls({(r["tenant"], r["source_uri"]): r["deleted_time"] for r in rows})

    def buries(self, event: RawEvent) -> bool:
        """True when ``event`` was read from its source before its tenant or source was deleted."""
        if not self.times:
            return False
        for key in ((event.tenant, None), (event.tenant, event.source_uri)):
            deleted = self.times.get(key)
            if deleted is not None and event.ingest_time < deleted:
                return True
        return False
