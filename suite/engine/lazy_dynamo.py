"""Keep ``torch._dynamo`` unimported until something uses it.

Building any ``torch.optim`` optimizer calls ``Optimizer.add_param_group``, which torch wraps
with ``torch._disable_dynamo``: on its first call that wrapper imports ``torch._dynamo`` (1.8 s
measured here with ``python -X importtime``, 2–3 s under load; once per process, workers
included) only to wrap the method with ``torch._dynamo.disable``, which changes nothing while
nothing is being compiled. The stacked engine builds a ``torch.optim`` optimizer per row (its
schedulers drive them) but never steps one, so that import was pure start-up cost.

:func:`keep_dynamo_lazy` fills torch's own per-function cache (the ``__dynamo_disable``
attribute that wrapper looks up first) for the four wrapped ``Optimizer`` methods with a shim:
while ``torch._dynamo`` is not imported it calls the method directly; once anything imports it
(``torch.compile`` in a plugin, or ``Optimizer.step``, which imports it itself), the shim
builds torch's real ``torch._dynamo.disable`` wrapper and caches it in its place, so from
then on behaviour is exactly torch's. ``SUITE_EAGER_DYNAMO=1`` leaves torch untouched.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from collections.abc import Callable
from typing import Any

WRAPPED_METHODS = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
CACHE = "__dynamo_disable"  # the attribute torch._compile._disable_dynamo caches its wrapper in


def keep_dynamo_lazy() -> int:
    """Install the shims (see the module docstring); return how many methods got one.

    Torch's private parts are checked first, never assumed: a method gets a shim only if it is
    the wrapper ``torch._compile._disable_dynamo`` makes and that wrapper still looks its cache up
    under :data:`CACHE`. Otherwise nothing is installed and torch's own path runs (start-up is
    only slower)."""
    if os.environ.get("SUITE_EAGER_DYNAMO") or "torch._dynamo" in sys.modules:
        return 0
    from torch.optim import Optimizer

    inner = _torch_wrapper_code()
    if inner is None:
        return 0
    done = 0
    for name in WRAPPED_METHODS:
        method = getattr(Optimizer, name, None)
        fn = getattr(method, "__wrapped__", None)
        if fn is not None and getattr(method, "__code__", None) is inner and getattr(fn, CACHE, None) is None:
            setattr(fn, CACHE, _shim(fn, method))
            done += 1
    return done


def _torch_wrapper_code() -> Any:
    """The code of the wrapper ``torch._compile._disable_dynamo`` makes, if it still caches under
    :data:`CACHE`; else None."""
    try:
        from torch import _compile
    except ImportError:
        return None
    outer = getattr(getattr(_compile, "_disable_dynamo", None), "__code__", None)
    for const in getattr(outer, "co_consts", ()):
        if isinstance(const, types.CodeType) and CACHE in const.co_consts:
            return const
    return None


def _shim(fn: Callable[..., Any], wrapper: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is None:
            return fn(*args, **kwargs)
        try:
            real = dynamo.disable(fn, True, wrapping=False)  # what torch._disable_dynamo would have made
        except TypeError:  # torch builds it another way now: let torch's own wrapper do it, from now on
            with contextlib.suppress(AttributeError):
                delattr(fn, CACHE)
            return wrapper(*args, **kwargs)
        setattr(fn, CACHE, real)
        return real(*args, **kwargs)

    return call
