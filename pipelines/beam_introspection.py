"""Memoised Beam introspection: what makes a small Beam run cost seconds before it touches a row.

Building, translating and starting a pipeline asks the same questions of the
same functions over and over: for every ``ParDo`` Beam lists every method of
its DoFn (``dir``) and takes ``inspect.signature`` of each, about seven times
per DoFn, and it rebuilds an argparse parser for every ``view_as`` of the
options (twice per applied transform). For the streaming job's micro-batch,
a graph of about 300 transforms, that was about 32,000 signatures and 600
parsers per run, most of the run's fixed cost. The answers never change for a
given function, DoFn object or options object, so they are kept:

- a function's signature (arguments and defaults), by the function object,
  weakly (a lambda made for one run is forgotten with it);
- a DoFn's state and timer specs, by the DoFn object, weakly;
- an options view per options class, on the options object itself
  (``ReusedViewsOptions``; all views of one object already share their values).

Process-wide and idempotent; it changes no result, only the time Beam takes
to reach it. This module must not build pipelines or touch data.
"""
from __future__ import annotations

import types
import weakref
from typing import Any, Callable, TypeVar

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import core, userstate

_View = TypeVar("_View", bound=PipelineOptions)

_SHIPPED_ARGS_DEFAULTS: Callable[[Any], tuple[list[str], list[Any]]] = core.get_function_args_defaults
_SHIPPED_DOFN_SPECS: Callable[[Any], tuple[set, set]] = userstate.get_dofn_specs  # type: ignore[assignment]
_signatures: weakref.WeakKeyDictionary[Callable, dict[bool, tuple[list[str], list[Any]]]] = weakref.WeakKeyDictionary()
_dofn_specs: weakref.WeakKeyDictionary[Any, tuple[set, set]] = weakref.WeakKeyDictionary()


def _args_defaults(f: Any) -> tuple[list[str], list[Any]]:
    """Beam's ``get_function_args_defaults``, once per plain function (bound or not); other callables pass through."""
    if isinstance(f, types.MethodType) and isinstance(f.__func__, types.FunctionType):
        function, bound = f.__func__, True
    elif isinstance(f, types.FunctionType):
        function, bound = f, False
    else:
        return _SHIPPED_ARGS_DEFAULTS(f)
    known = _signatures.setdefault(function, {})
    if bound not in known:
        known[bound] = _SHIPPED_ARGS_DEFAULTS(f)
    args, defaults = known[bound]
    return list(args), list(defaults)  # callers may extend their copy


def _specs(dofn: Any) -> tuple[set, set]:
    """Beam's ``get_dofn_specs``, once per DoFn object."""
    try:
        states, timers = _dofn_specs[dofn]
    except KeyError:
        states, timers = _dofn_specs[dofn] = _SHIPPED_DOFN_SPECS(dofn)
    except TypeError:  # a DoFn that cannot be weakly referenced or hashed: ask Beam every time
        return _SHIPPED_DOFN_SPECS(dofn)
    return set(states), set(timers)


def memoise_introspection(enabled: bool = True) -> None:
    """Route Beam's signature and DoFn-spec lookups through the caches (``False``: Beam's own functions again)."""
    core.get_function_args_defaults = _args_defaults if enabled else _SHIPPED_ARGS_DEFAULTS  # type: ignore[assignment]
    userstate.get_dofn_specs = _specs if enabled else _SHIPPED_DOFN_SPECS  # type: ignore[assignment]


class ReusedViewsOptions(PipelineOptions):
    """Pipeline options whose ``view_as`` builds each options class's view once, then hands back the same view."""

    def view_as(self, cls: type[_View]) -> _View:
        views = self.__dict__.setdefault("_reused_views", {})
        if cls not in views:
            views[cls] = super().view_as(cls)
        return views[cls]


def with_reused_views(options: PipelineOptions | None) -> ReusedViewsOptions:
    """The same options (every flag and value set on ``options``; Beam's defaults for None) as ``ReusedViewsOptions``."""
    if isinstance(options, ReusedViewsOptions):
        return options
    if options is None:
        return ReusedViewsOptions()
    return ReusedViewsOptions.from_dictionary(options.get_all_options(drop_default=True, retain_unknown_options=True))
