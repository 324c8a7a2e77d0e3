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

import os
import sys
from collections.abc import Callable
from typing import Any

WRAPPED_METHODS = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
CACHE = "__dynamo_disable"  # the attribute torch._compile._disable_dynamo caches its wrapper in


def keep_dynamo_lazy() -> int:
    """Install the shims (see the module docstring); return how many methods got one."""
    if os.environ.get("SUITE_EAGER_DYNAMO") or "torch._dynamo" in sys.modules:
        return 0
    from torch.optim import Optimizer

    done = 0
    for name in WRAPPED_METHODS:
        fn = getattr(getattr(Optimizer, name, None), "__wrapped__", None)
        if fn is not None and getattr(fn, CACHE, None) is None:
            setattr(fn, CACHE, _shim(fn))
            done += 1
    return done


def _shim(fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        dynamo = sys.modules.get("torch._dynamo")
        if dynamo is None:
            return fn(*args, **kwargs)
        real = dynamo.disable(fn, True, wrapping=False)  # what torch._disable_dynamo would have made
        setattr(fn, CACHE, real)
        return real(*args, **kwargs)

    return call
