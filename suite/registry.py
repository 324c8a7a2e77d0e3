"""The plugin registry: loads every ``suite.plugins`` entry point once and indexes components.

Built-in components arrive through the same entry-point group as third-party ones, so both
take exactly the same path. A plugin that fails to import, or implements a misspelt hook, is
recorded as broken (``suite list`` shows it with its error) and does not take the suite down.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from suite import ENTRY_POINT_GROUP, PROJECT_NAME, hookspecs
from suite.errors import (
    DuplicateComponentError,
    ParamError,
    RegistrationError,
    UnknownComponentError,
    UnknownParamError,
)
from suite.params import Param

FAMILIES = tuple(hookspecs.FAMILIES)
SCHEDULER_INTERVALS = ("step", "epoch")
DESCRIPTION_LIMIT = 120  # characters of a component's one-line description (enforced at registration)


@dataclass(frozen=True)
class Component:
    """One registered component: a name in a family, its factory and its hyperparameters.

    ``factory(ctx, **hyperparams)`` builds the torch object (see :class:`suite.BuildContext`).
    ``interval`` is required for schedulers: ``"step"`` or ``"epoch"``. ``stacked`` (optional)
    is the component's stacked implementation, ``stacked(objects, stack)`` (see
    :mod:`suite.stacked`); without one, a spec using the component runs through the per-run loop.
    """

    family: str
    name: str
    factory: Callable[..., Any]
    description: str
    params: tuple[Param, ...] = ()
    distribution: str = "unknown"
    version: str = "unknown"
    interval: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    stacked: Callable[..., Any] | None = None

    @property
    def label(self) -> str:
        return f"{self.family} {self.name!r}"

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.params) or "none"
        hint = _closest(name, [p.name for p in self.params])
        raise UnknownParamError(
            f"{self.family} {self.name!r} has no hyperparameter {name!r}{hint}; "
            f"its hyperparameters are: {known}"
        )

    def resolve(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overlaid with ``overrides`` (raw strings allowed), validated and coerced."""
        overrides = dict(overrides or {})
        for key in overrides:
            self.param(key)  # raises on an unknown name
        return {
            p.name: p.coerce(overrides[p.name], owner=self.family) if p.name in overrides else p.default
            for p in self.params
        }

    def build(self, ctx: Any, params: Mapping[str, Any]) -> Any:
        return self.factory(ctx, **params)

    def to_dict(self) -> dict[str, Any]:
        d = {
            "family": self.family,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "description": self.description,
            "params": [p.to_dict() for p in self.params],
        }
        if self.interval:
            d["interval"] = self.interval
        return d


@dataclass(frozen=True)
class BrokenPlugin:
    """An entry point that could not be loaded, with the reason."""

    name: str
    distribution: str
    error: str


class LazyCallable:
    """A callable named ``"package.module:attribute"``, imported on its first call.

    A plugin whose factories need heavy imports (torch) registers them this way, so that
    loading the registry (``suite list``, flag validation) imports only the registrations; the
    factory's module is imported by the first run that builds the component. It pickles as
    its name."""

    __slots__ = ("path", "_target")

    def __init__(self, path: str) -> None:
        if ":" not in path:
            raise ValueError(f"a lazy callable is named 'package.module:attribute', got {path!r}")
        self.path = path
        self._target: Callable[..., Any] | None = None

    def load(self) -> Callable[..., Any]:
        """The named callable (imported once)."""
        if self._target is None:
            module, _, attr = self.path.partition(":")
            self._target = functools.reduce(getattr, attr.split("."), importlib.import_module(module))
        return self._target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.load()(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return LazyCallable, (self.path,)

    def __repr__(self) -> str:
        return f"<lazy {self.path}>"


def lazy(path: str) -> LazyCallable:
    """``lazy("pkg.mod:make_thing")``: a factory (or stacked implementation) imported when first
    called. See :class:`LazyCallable`."""
    return LazyCallable(path)


def _closest(name: str, known: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


class Registry:
    """All components of all plugins, by family and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._components: dict[str, dict[str, Component]] = {f: {} for f in FAMILIES}
        self.broken: list[BrokenPlugin] = []
        self.conflicts: dict[tuple[str, str], list[str]] = {}  # (family, name) -> the distributions
        self._dists: dict[int, tuple[str, str]] = {}

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_entry_points(cls, extra_plugins: Iterable[tuple[object, str, str]] = ()) -> Registry:
        """Load every ``suite.plugins`` entry point, plus ``(plugin, dist, version)`` extras."""
        reg = cls()
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: (e.dist.name if e.dist else "", e.name)):
            dist = ep.dist.name if ep.dist else "unknown"
            version = ep.dist.version if ep.dist else "unknown"
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must not take the suite down
                reg.broken.append(BrokenPlugin(ep.name, dist, _one_line(exc)))
                continue
            reg.add_plugin(plugin, dist, version, name=f"{dist}:{ep.name}")
        for plugin, dist, version in extra_plugins:
            reg.add_plugin(plugin, dist, version)
        reg.collect()
        return reg

    def add_plugin(self, plugin: object, distribution: str, version: str, name: str | None = None) -> None:
        """Register a plugin object (a module or any object with ``@hookimpl`` methods)."""
        if self.pm.is_registered(plugin):
            return
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(plugin)
            hooks = ", ".join(hookspecs.FAMILIES.values())
            self.broken.append(
                BrokenPlugin(name or repr(plugin), distribution, f"{_one_line(exc)} (valid hooks: {hooks})")
            )
            return
        self._dists[id(plugin)] = (distribution, version)
        for attr in _unmarked_hooks(plugin):
            self.broken.append(BrokenPlugin(
                name or repr(plugin), distribution,
                f"{attr} has no @hookimpl, so it registers nothing: decorate it with @suite.hookimpl "
                "(from suite import hookimpl)"
                + ("" if attr in hookspecs.FAMILIES.values() else _closest(attr, hookspecs.FAMILIES.values())),
            ))

    def collect(self) -> None:
        """Call every plugin's hooks and index what they register."""
        for family, hook_name in hookspecs.FAMILIES.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():  # registration order
                dist, version = self._dists.get(id(impl.plugin), ("unknown", "unknown"))
                register = functools.partial(self._register_or_record, family, dist, version, impl.plugin_name)
                try:
                    impl.function(register=register)
                except Exception as exc:
                    self.broken.append(BrokenPlugin(impl.plugin_name, dist, f"{hook_name}: {_one_line(exc)}"))

    def _register_or_record(self, family: str, distribution: str, version: str, plugin_name: str,
                            *args: Any, **kwargs: Any) -> None:
        """``register`` as plugins see it: an invalid registration makes its plugin broken and a
        name registered twice a conflict (only that name fails); the rest goes on."""
        name = kwargs.get("name", args[0] if args else None)
        key = (family, name) if isinstance(name, str) else None
        if key in self.conflicts:
            self.conflicts[key].append(distribution)
            return
        try:
            self._register(family, distribution, version, *args, **kwargs)
        except DuplicateComponentError:
            first = self._components[family].pop(name)
            self.conflicts[key] = [first.distribution, distribution]
        except (RegistrationError, TypeError) as exc:
            self.broken.append(BrokenPlugin(plugin_name, distribution, f"{_one_line(exc)}"))

    def conflict_message(self, family: str, name: str) -> str:
        """Why ``family name`` cannot be used: the distributions that all register it."""
        dists = self.conflicts[(family, name)]
        return (f"{family} {name!r} is registered twice: by {' and by '.join(dists)}; uninstall one of them "
                "or rename the component")

    def _register(
        self,
        family: str,
        distribution: str,
        version: str,
        name: str,
        factory: Callable[..., Any],
        description: str,
        params: Iterable[Param] = (),
        interval: str | None = None,
        stacked: Callable[..., Any] | None = None,
        **extra: Any,
    ) -> None:
        where = f"{family} {name!r} from {distribution}"
        if (not isinstance(name, str) or not name.strip() or any(ch in name for ch in ", /\\")
                or name.startswith(".") or any(ord(ch) < 32 or ord(ch) == 127 for ch in name)):
            raise RegistrationError(f"{where}: a name must be a non-empty word without commas, spaces, slashes, "
                                    "control characters or a leading dot")
        if not callable(factory):
            raise RegistrationError(f"{where}: factory must be callable")
        if stacked is not None and not callable(stacked):
            raise RegistrationError(f"{where}: stacked must be callable (see suite.stacked) or left out")
        if not isinstance(description, str) or not description.strip():
            raise RegistrationError(f"{where}: give a one-line description")
        line = description.strip().splitlines()[0]
        if len(line) > DESCRIPTION_LIMIT:
            raise RegistrationError(f"{where}: its description has {len(line)} characters; give a one-line "
                                    f"description of at most {DESCRIPTION_LIMIT} (suite list shows it on one line)")
        params = tuple(params)
        for p in params:
            if not isinstance(p, Param):
                raise RegistrationError(f"{where}: params must be suite.Param objects, got {p!r}")
            if p.default is not None:
                try:
                    p.validate(p.default, label=f"{family}.{p.name}")
                except ParamError as exc:
                    raise RegistrationError(f"{where}: its default {exc}; move the default into the range or "
                                            "widen the range") from None
        names = [p.name for p in params]
        if len(set(names)) != len(names):
            raise RegistrationError(f"{where}: duplicate hyperparameter names in {names}")
        if extra.get("lr_cap") is not None and (family != "problem" or not callable(extra["lr_cap"])):
            raise RegistrationError(f"{where}: lr_cap is a problem's, and callable: lr_cap(problem_params, optimizer, "
                                    "optimizer_params) -> the largest stable lr, or None (see docs/plugins.md)")
        if family == "scheduler" and interval not in SCHEDULER_INTERVALS:
            raise RegistrationError(f"{where}: schedulers must say interval='step' or interval='epoch'")
        existing = self._components[family].get(name)
        if existing is not None:
            raise DuplicateComponentError(
                f"{family} {name!r} is registered twice: by {existing.distribution} and by "
                f"{distribution}; uninstall one of them or rename the component"
            )
        self._components[family][name] = Component(
            family=family,
            name=name,
            factory=factory,
            description=description.strip().splitlines()[0],
            params=params,
            distribution=distribution,
            version=version,
            interval=interval,
            extra=extra,
            stacked=stacked,
        )

    # -- lookup ---------------------------------------------------------------------------
    def names(self, family: str) -> list[str]:
        return sorted(self._family(family))

    def components(self, family: str | None = None) -> list[Component]:
        families = [family] if family else list(FAMILIES)
        return [self._family(f)[n] for f in families for n in sorted(self._family(f))]

    def get(self, family: str, name: str) -> Component:
        comps = self._family(family)
        if name in comps:
            return comps[name]
        if (family, name) in self.conflicts:
            raise DuplicateComponentError(self.conflict_message(family, name))
        known = ", ".join(sorted(comps)) or "none"
        raise UnknownComponentError(
            f"unknown {family} {name!r}{_closest(name, comps)}; known {family}s: {known}{self._broken_hint()}"
        )

    def _broken_hint(self) -> str:
        """For an unknown name: the broken plugins that may have provided it."""
        if not self.broken:
            return ""
        shown = "; ".join(f"{b.name} ({b.distribution}): {b.error}" for b in self.broken[:3])
        more = f" and {len(self.broken) - 3} more" if len(self.broken) > 3 else ""
        return f"; a broken plugin may have provided it (see suite list): {shown}{more}"

    def _family(self, family: str) -> dict[str, Component]:
        if family not in self._components:
            raise UnknownComponentError(
                f"unknown component family {family!r}{_closest(family, FAMILIES)}; "
                f"families: {', '.join(FAMILIES)}"
            )
        return self._components[family]


def _unmarked_hooks(plugin: object) -> list[str]:
    """Functions of ``plugin`` named like a hook (``suite_register_*``) that lack ``@hookimpl``."""
    out = []
    for attr in dir(plugin):
        fn = getattr(plugin, attr, None) if attr.startswith("suite_register") else None
        if callable(fn) and not hasattr(fn, f"{PROJECT_NAME}_impl") and not hasattr(fn, f"{PROJECT_NAME}_spec"):
            out.append(attr)
    return out


def _one_line(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return " ".join(text.split())


@functools.lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry, loaded lazily once from the installed entry points."""
    return Registry.from_entry_points()
