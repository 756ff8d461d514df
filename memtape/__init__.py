"""memtape: stream chats, mail, meetings and health records into long-term memory tables, and recall them.

``memtape.recall(query, tenant, budget)`` is the Python API of ``memtape
recall``. It is imported on first use, so ``import memtape`` (and every CLI
command) stays free of Lance and the models until recall is asked for.
"""
from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["recall"]


class _Package(types.ModuleType):
    """The package, keeping ``memtape.recall`` the function when the submodule of that name is imported."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "recall" and isinstance(value, types.ModuleType):
            return  # the import system binds each submodule on its parent; the function keeps the name
        super().__setattr__(name, value)


def __getattr__(name: str) -> Any:
    if name == "recall":
        from memtape.recall import recall

        globals()["recall"] = recall
        return recall
    raise AttributeError(f"module 'memtape' has no attribute {name!r}")


sys.modules[__name__].__class__ = _Package
