"""Reading the YAML files the suite takes (benchmark files, a run's ``spec.yaml``) in bounded
time and memory, whatever they hold.

PyYAML's safe loader is safe against code, not against size: aliases may expand a small file
into billions of nodes ("billion laughs"), an alias may refer to its own anchor (a cycle), deep
nesting overflows the recursive composer, and a large file takes long to parse. A file the
limits below refuse is one :class:`suite.errors.BenchFileError` line naming the file:

- :data:`MAX_BYTES` (256 KiB, env ``SUITE_MAX_YAML_BYTES``): the file's size; the suite's own
  benchmark files are about 5 KB. Only regular files are read (not a pipe or a device).
- :data:`MAX_DEPTH` (64): nesting of mappings and lists.
- :data:`MAX_ALIAS_NODES` (10,000): nodes reached again through aliases, counted over the
  whole file (an anchor reused as ``*sizes`` costs the size of what it names, each time).
- An alias inside the node it names (``&a [*a]``) is refused as recursive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from suite.errors import BenchFileError

MAX_BYTES = 256 * 1024
MAX_BYTES_ENV = "SUITE_MAX_YAML_BYTES"
MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000


def max_bytes() -> int:
    """The size limit of a YAML file: :data:`MAX_BYTES`, or ``SUITE_MAX_YAML_BYTES``."""
    from suite.specs.limits import env_limit

    return env_limit(MAX_BYTES_ENV, MAX_BYTES)


class Node:
    """A YAML value with the line of its key (or of itself) for error messages, and its path
    (``experiments.a.params``)."""

    __slots__ = ("value", "line", "path")

    def __init__(self, value: Any, line: int, path: str) -> None:
        self.value, self.line, self.path = value, line, path

    def plain(self) -> Any:
        """The value as plain Python (dicts, lists, scalars), without lines."""
        if isinstance(self.value, dict):
            return {k: v.plain() for k, v in self.value.items()}
        if isinstance(self.value, list):
            return [v.plain() for v in self.value]
        return self.value


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, with the nesting depth bounded while it composes (its composer
    recurses once per level)."""

    def __init__(self, stream: str, file: str) -> None:
        super().__init__(stream)
        self.file, self.depth = file, 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            line = self.peek_event().start_mark.line + 1
            raise BenchFileError(f"{self.file}:{line}: nested deeper than {MAX_DEPTH} levels: "
                                 "a benchmark file or spec.yaml needs a few")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Converter:
    """Composed YAML nodes -> :class:`Node` trees, counting the nodes reached through aliases
    and refusing an alias inside what it names."""

    def __init__(self, loader: _Loader, file: str) -> None:
        self.loader, self.file = loader, file
        self.seen: set[int] = set()
        self.open: set[int] = set()  # the nodes being converted: an alias to one of them is a cycle
        self.again = 0

    def fail(self, node: yaml.Node, message: str) -> BenchFileError:
        return BenchFileError(f"{self.file}:{node.start_mark.line + 1}: {message}")

    def convert(self, node: yaml.Node, path: str) -> Node:
        key = id(node)
        if key in self.open:
            raise self.fail(node, f"{path or 'top level'}: an alias refers to the anchor it is inside "
                                  "(a recursive alias): remove it")
        if key in self.seen:
            self.again += 1
            if self.again > MAX_ALIAS_NODES:
                raise self.fail(node, f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes: write the "
                                      "values out, or use fewer aliases")
        self.seen.add(key)
        self.open.add(key)
        try:
            return self._convert(node, path)
        finally:
            self.open.discard(key)

    def _convert(self, node: yaml.Node, path: str) -> Node:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Node] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise self.fail(key_node, f"{path or 'top level'}: keys must be names")
                key = self.scalar(key_node)
                if not isinstance(key, str | int | float) or isinstance(key, bool):
                    raise self.fail(key_node, f"{path or 'top level'}: keys must be names")
                key = str(key)
                sub = f"{path}.{key}" if path else key
                if key in out:
                    raise self.fail(key_node, f"{sub}: given twice")
                child = self.convert(value_node, sub)
                child.line = key_node.start_mark.line + 1
                out[key] = child
            return Node(out, line, path)
        if isinstance(node, yaml.SequenceNode):
            return Node([self.convert(n, f"{path}[{i}]") for i, n in enumerate(node.value)], line, path)
        return Node(self.scalar(node), line, path)

    def scalar(self, node: yaml.Node) -> Any:
        try:
            return self.loader.construct_object(node)
        except (ValueError, OverflowError) as exc:  # an int past Python's digit limit, a date like 2001-13-45
            raise self.fail(node, f"{node.value[:40]!r} is not a valid value: {exc}") from None


def read(path: Path, what: str = "benchmark file", needs: str = "") -> Node:
    """Parse the YAML file ``path`` (a ``what``) into :class:`Node` trees within the limits above;
    anything malformed or past a limit is a one-line :class:`BenchFileError` naming the file.
    ``needs``: what an empty file is told it lacks."""
    file = str(path)
    limit = max_bytes()
    try:
        if not path.is_file():
            kind = "a directory" if path.is_dir() else "missing" if not path.exists() else "not a regular file"
            raise BenchFileError(f"{file}: cannot read the {what}: {kind}")
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise BenchFileError(f"{file}: cannot read the {what}: {exc.strerror}") from None
    if len(data) > limit:
        raise BenchFileError(f"{file}: the {what} is larger than {limit:,} bytes: split it, or set "
                             f"{MAX_BYTES_ENV} to a larger size")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BenchFileError(f"{file}:{line}: not a text file (UTF-8 YAML expected): byte {exc.start} "
                             f"is {exc.object[exc.start]:#04x}") from None
    try:
        loader = _Loader(text, file)  # the reader refuses control characters here already
    except yaml.YAMLError as exc:
        raise BenchFileError(f"{file}: not a YAML text file: {' '.join(str(exc).split())}") from None
    try:
        root = loader.get_single_node()
        if root is None:
            raise BenchFileError(f"{file}:1: the file is empty" + (f"; it needs {needs}" if needs else ""))
        return _Converter(loader, file).convert(root, "")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        problem = " ".join(str(exc.problem or exc.context or "malformed").split())
        raise BenchFileError(f"{file}:{line}: malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise BenchFileError(f"{file}: malformed YAML: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()

