"""The shared validation layer of every file and value a user gives: read checks, strict JSON/YAML,
strict integers.

Every reader of user files goes through :func:`input_path` (exists, is a file, is readable, size
under ``max_file_bytes``) and, for text, :func:`read_text` (strict UTF-8) and :func:`parse_json` /
:func:`parse_yaml` (duplicate keys refused, YAML alias bombs refused before they are expanded,
one-line messages).  Values are checked with :func:`strict_int` and :func:`int_array`: integers
are integers (``True``, ``2.5``, ``"3"`` and ``3.0`` are refused, never converted), and an integer
beyond the range of the array it goes into is refused instead of wrapping.

Every failure is a :class:`~placement.errors.PlacementInputError` naming the file and field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PlacementInputError, input_error
from .limits import check_limit, limit

__all__ = ["input_path", "read_bytes", "read_text", "parse_json", "parse_yaml", "load_text_mapping",
           "strict_int", "int_array", "one_line", "describe"]


def one_line(text: Any) -> str:
    """``text`` on one line (runs of whitespace, newlines included, become one space)."""
    return " ".join(str(text).split())


def describe(value: Any) -> str:
    """A short ``repr`` of ``value`` for a message (long values cut)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def input_path(path: str | os.PathLike[str], source: str | None = None) -> Path:
    """``path`` as a :class:`Path` once it is known to be an existing, readable regular file under the
    ``max_file_bytes`` limit; otherwise an input error saying which of these fails."""
    p = Path(path)
    src = source or str(path)
    if str(path) == "":
        raise input_error("empty path; give a file name", src)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise input_error("file not found; check the path", src) from None
    except OSError as exc:
        raise input_error(f"cannot access the file ({one_line(exc.strerror or exc)})", src) from None
    if p.is_dir():
        raise input_error("is a directory, not a file; give the file inside it", src)
    if not p.is_file():
        raise input_error("is not a regular file", src)
    try:
        with p.open("rb"):
            pass
    except PermissionError:
        raise input_error("permission denied: the file cannot be read; check its permissions", src) from None
    except OSError as exc:
        raise input_error(f"cannot open the file ({one_line(exc.strerror or exc)})", src) from None
    check_limit("max_file_bytes", int(st.st_size), src)
    return p


def read_bytes(path: str | os.PathLike[str], source: str | None = None) -> bytes:
    """The bytes of ``path`` after :func:`input_path`'s checks."""
    p = input_path(path, source)
    try:
        return p.read_bytes()
    except OSError as exc:
        raise input_error(f"cannot read the file ({one_line(exc.strerror or exc)})", source or str(path)) from None


def read_text(path: str | os.PathLike[str], source: str | None = None) -> str:
    """The text of ``path``, which must be UTF-8 (a byte-order mark is dropped)."""
    src = source or str(path)
    data = read_bytes(path, src)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise input_error(f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save the file as "
                          "UTF-8", src) from None


def _no_duplicates(source: str):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise input_error(f"duplicate key {key!r}; each key may appear once per mapping", source, key)
            out[key] = value
        return out
    return hook


def parse_json(text: str, source: str) -> Any:
    """Parse JSON text: duplicate keys, NaN/Infinity and integers of more than 4300 digits are refused."""
    def constant(name: str) -> Any:
        raise input_error(f"{name} is not a JSON number; write a finite number", source)

    try:
        return json.loads(text, object_pairs_hook=_no_duplicates(source), parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise input_error(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", source) from None
    except PlacementInputError:
        raise
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise input_error(f"invalid JSON ({one_line(exc)})", source) from None
    except RecursionError:
        raise input_error("invalid JSON: nested too deeply", source) from None


def _yaml_loader() -> type:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """Safe loader: duplicate keys refused, alias-expanded size bounded before construction."""

        def construct_document(self, node: Any) -> Any:
            _check_expanded_size(node, limit("max_yaml_nodes"))
            return super().construct_document(node)

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> dict:
        loader.flatten_mapping(node)
        seen: list[Any] = []
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                duplicate = False
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.append(key)
        return loader.construct_mapping(node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    return StrictLoader


def _check_expanded_size(root: Any, cap: int) -> None:
    """Refuse a YAML node graph whose aliases expand to more than ``cap`` nodes (a "billion laughs" file).

    Sizes are memoised per node, so the check costs one pass over the distinct nodes."""
    import yaml

    size: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in size:
            continue
        if isinstance(node, yaml.ScalarNode):
            size[id(node)] = 1
            continue
        children = (list(node.value) if isinstance(node, yaml.SequenceNode)
                    else [n for pair in node.value for n in pair])
        if done:
            total = 1 + sum(size.get(id(c), 0) for c in children)
            size[id(node)] = total
            if total > cap:
                raise _TooLarge(total)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in size)
    if size.get(id(root), 0) > cap:
        raise _TooLarge(size[id(root)])


class _TooLarge(Exception):
    def __init__(self, nodes: int):
        self.nodes = nodes


_LOADER: type | None = None


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text safely: duplicate keys and alias bombs refused, errors on one line."""
    import yaml

    global _LOADER
    if _LOADER is None:
        _LOADER = _yaml_loader()
    try:
        return yaml.load(text, Loader=_LOADER)  # noqa: S506 - a SafeLoader subclass
    except _TooLarge as exc:
        check_limit("max_yaml_nodes", exc.nodes, source)
        raise AssertionError("unreachable") from None  # pragma: no cover
    except yaml.YAMLError as exc:
        raise input_error(f"invalid YAML: {one_line(exc)}", source) from None
    except RecursionError:
        raise input_error("invalid YAML: nested too deeply", source) from None
    except PlacementInputError:
        raise
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise input_error(f"invalid YAML ({one_line(exc)})", source) from None


def load_text_mapping(path: str | os.PathLike[str], source: str | None = None) -> Any:
    """Read a ``.json``, ``.yaml`` or ``.yml`` file with the strict parsers (by its extension)."""
    src = source or str(path)
    suffix = Path(path).suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise input_error(f"unknown extension '{Path(path).suffix}'; use .json, .yaml or .yml", src)
    text = read_text(path, src)
    return parse_json(text, src) if suffix == ".json" else parse_yaml(text, src)


def strict_int(value: Any, source: str | None, field: str, *, minimum: int | None = None,
               maximum: int | None = None) -> int:
    """``value`` as an ``int`` if it is one (``int`` or numpy integer, not ``bool``), within the bounds."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        kind = type(value).__name__
        raise input_error(f"must be an integer, got {describe(value)} ({kind})", source, field)
    out = int(value)
    if minimum is not None and out < minimum:
        raise input_error(f"must be >= {minimum}, got {out}", source, field)
    if maximum is not None and out > maximum:
        raise input_error(f"must be <= {maximum}, got {out}", source, field)
    return out


def _leaves(value: list) -> list:
    level: list = value
    while level and any(isinstance(x, list) for x in level):
        nested = [x for x in level if isinstance(x, list)]
        flat = [x for x in level if not isinstance(x, list)]
        level = flat + [y for x in nested for y in x]
    return level


def int_array(value: Any, source: str | None, field: str, *, lo: int, hi: int, shape_doc: str = "") -> np.ndarray:
    """``value`` (nested lists from JSON/YAML, or an integer numpy array) as an ``int64`` array.

    Every leaf must be an integer in ``[lo, hi]``: booleans, fractions, whole floats such as ``3.0``,
    numeric strings and ragged lists are refused, and an out-of-range id is reported before the
    conversion (so a huge id never wraps).
    """
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "iu":
            raise input_error(f"must hold integers, got dtype {value.dtype}", source, field)
        arr = value
    else:
        if not isinstance(value, list):
            raise input_error(f"must be a nested list of integers{' ' + shape_doc if shape_doc else ''}, got "
                              f"{type(value).__name__}", source, field)
        for leaf in _leaves(value):
            if isinstance(leaf, bool) or not isinstance(leaf, int):
                raise input_error(f"must hold integers (whole numbers) only, found {describe(leaf)} "
                                  f"({type(leaf).__name__})", source, field)
            if not lo <= leaf <= hi:
                raise input_error(f"value {leaf} is outside [{lo}, {hi}]", source, field)
        try:
            arr = np.array(value, dtype=np.int64)
        except (TypeError, ValueError) as exc:
            raise input_error(f"must be a rectangular nested list{' ' + shape_doc if shape_doc else ''} "
                              f"({one_line(exc)})", source, field) from None
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        bad = int(arr.min()) if int(arr.min()) < lo else int(arr.max())
        raise input_error(f"value {bad} is outside [{lo}, {hi}]", source, field)
    return arr.astype(np.int64, copy=False)
