"""Health checks behind ``memtape doctor``: configuration, store, models and broker.

Each check returns a ``Check`` naming what it looked at and, on failure, the
exact table, fragment, file or address at fault. Checks only read: they never
repair, create or download anything.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import socket
from typing import Callable

from memtape.config import Config, KafkaConfig
from memtape.errors import UserError


@dataclasses.dataclass
class Check:
    name: str
    ok: bool
    detail: str
    required: bool = True  # a failed optional check (no broker configured, no store yet) is reported, not fatal


def check_store(cfg: Config) -> list[Check]:
    """Open every table and read every fragment, so a corrupt data file is named."""
    from memtape.connectors.lance_store import Store

    try:
        store = Store(cfg.store.home, cfg.store.storage_options, create=False)
    except UserError as exc:  # a missing store is a fresh start, not a fault: the first backfill creates it
        return [Check("store", False, f"{exc}; the first backfill creates it", required=False)]
    try:
        infos = store.info()
    except Exception as exc:  # any failure to open is the finding itself
        return [Check("store", False, f"{cfg.store.home}: {exc}".splitlines()[0])]
    checks = [Check("store", True, f"{cfg.store.home}: {len(infos)} tables")]
    for info in infos:
        ds = store.dataset(info.name)
        for fragment in ds.get_fragments():
            try:
                fragment.to_table()
            except Exception as exc:  # a corrupt or missing data file surfaces here
                files = ", ".join(f.path for f in fragment.data_files())
                checks.append(Check(f"table {info.name}", False,
                                    f"fragment {fragment.fragment_id} ({files}) unreadable: {str(exc).splitlines()[0]}"))
                break
        else:
            checks.append(Check(f"table {info.name}", True, f"{info.rows} rows, version {info.version}"))
    return checks


def check_models(cfg: Config) -> list[Check]:
    """The configured models resolve to local files (nothing is downloaded)."""
    checks = []
    spacy_found = importlib.util.find_spec(cfg.models.spacy) is not None
    checks.append(Check("model spacy", spacy_found, cfg.models.spacy if spacy_found else f"{cfg.models.spacy}: package not installed"))
    from memtape.transforms.models import embedding_model_files

    missing = [p for p in embedding_model_files(cfg.models.embedding) if not p.exists()]
    checks.append(Check("model embedding", not missing,
                        cfg.models.embedding if not missing else f"missing file {missing[0]}"))
    checks.append(_whisper_check(cfg.models.whisper))
    return checks


def _whisper_check(name: str) -> Check:
    """The transcription model resolves to a local directory (the packaged base model is joined once if needed)."""
    from memtape.transforms.whisper_model import resolve_model

    try:
        return Check("model whisper", True, resolve_model(name))
    except (UserError, ImportError) as exc:  # ImportError: faster-whisper itself is missing (no audio extra)
        return Check("model whisper", False, str(exc))


def check_broker(cfg: Config, timeout: float = 2.0) -> list[Check]:
    """Each bootstrap server accepts a TCP connection.

    A broker left at the default address is optional: batch backfills, SQL and
    recall need none, so its absence is reported without failing the doctor.
    """
    configured = cfg.kafka.bootstrap_servers != KafkaConfig().bootstrap_servers
    checks = []
    for server in cfg.kafka.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
                checks.append(Check(f"broker {server}", True, "reachable"))
        except (OSError, ValueError) as exc:
            detail = f"unreachable ({exc})"
            if not configured:
                detail = (f"none configured and none at the default address ({exc}); optional: only publish, stream, "
                          "topics and kafka:// backfills need one ([kafka] bootstrap_servers)")
            checks.append(Check(f"broker {server}", False, detail, required=configured))
    return checks


CHECKS: tuple[Callable[[Config], list[Check]], ...] = (check_store, check_models, check_broker)


def run_checks(cfg: Config) -> list[Check]:
    return [c for check in CHECKS for c in check(cfg)]
