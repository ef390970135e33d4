"""Run settings as dataclasses: each field is one command-line argument, settable from a JSON/YAML file too.

Every ``nezha`` command declares its settings as one dataclass and gets its arguments from
:func:`add_dataclass_arguments`, so a setting's name, type, default, choices and help live in one place:

* ``arg(default, "help")`` makes a field; a field without a default is required (as a flag or in the file);
  ``arg(..., positional=True)`` makes it a positional argument (required ones must be given on the command line);
* ``bool`` fields accept ``--flag``, ``--flag=True`` and ``--flag=False`` (the original scripts' style);
  ``Literal[...]`` fields are choices; ``list[X]`` fields take one or more values; ``X | None`` may stay unset.

Precedence: dataclass default < ``--config FILE`` < arguments given on the command line. Values from the file are
checked against the field types, and unknown names are an error naming the file and the name (a typo would
otherwise be ignored silently). Validation of values belongs in the dataclass's ``__post_init__``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from nezha.io.text import read_utf8

T = TypeVar("T")


def str2bool(value: str) -> bool:
    """Parse the original scripts' ``--do_lower_case=True`` style booleans."""
    v = value.strip().lower()
    if v in ("true", "1", "yes", "y", "t"):
        return True
    if v in ("false", "0", "no", "n", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def arg(default: Any = dataclasses.MISSING, help: str = "", *, positional: bool = False,  # noqa: A002
        **kwargs: Any) -> Any:
    """A dataclass field with help text; no ``default`` makes it required, ``positional`` a positional argument."""
    metadata = {"help": help, "positional": positional}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda d=default: list(d), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _unwrap_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _settings_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _argparse_type(hint: Any) -> dict[str, Any]:
    """``type``/``nargs``/``choices`` for one field type (``hint`` without its ``| None``)."""
    if hint is bool:
        return {"type": str2bool, "nargs": "?", "const": True, "metavar": "BOOL"}
    if typing.get_origin(hint) is list:
        (inner,) = typing.get_args(hint)
        return {**_argparse_type(inner), "nargs": "+"}
    if typing.get_origin(hint) is typing.Literal:
        choices = typing.get_args(hint)
        return {"type": type(choices[0]), "choices": choices}
    return {"type": hint if hint in (int, float, str) else str}


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, *, exclude: tuple[str, ...] = ()) -> None:
    """Add one argument per field of ``cls`` (plus ``--config FILE``). Unset ones stay absent from the namespace,
    so :func:`dataclass_from_namespace` can tell them from values given."""
    hints = typing.get_type_hints(cls)
    parser.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help="JSON (or YAML, with pyyaml installed) file of settings; arguments given here override it")
    required_group = None
    for f in _settings_fields(cls):
        if f.name in exclude:
            continue
        help_ = f.metadata.get("help", "")
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_}
        kw.update(_argparse_type(_unwrap_optional(hints[f.name])))
        if f.metadata.get("positional"):
            if not _is_required(f):
                kw["nargs"] = "?" if kw.get("nargs") in (None, "?") else "*"
            kw.setdefault("metavar", f.name.upper())
            parser.add_argument(f.name, **kw)
            continue
        default = None if _is_required(f) else (
            f.default if f.default is not dataclasses.MISSING else f.default_factory())
        if default is not None and default != [] and default != "":
            kw["help"] = f"{help_} (default: {default})"
        group = parser
        if _is_required(f):
            required_group = required_group or parser.add_argument_group("required (here or in the --config file)")
            group = required_group
        group.add_argument(f"--{f.name}", dest=f.name, **kw)


def load_settings_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON (``.json``) or YAML (``.yaml``/``.yml``) mapping of field names to values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: file not found: {path}")
    text = read_utf8(path)
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs pyyaml (pip install pyyaml), or use a JSON file") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            raise ValueError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of setting names to values, got {type(data).__name__}")
    return data


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _kind(hint: Any) -> str:
    return _KINDS.get(hint, getattr(hint, "__name__", str(hint)))


def _check_value(hint: Any, value: Any, where: str) -> Any:
    """``value`` as the field type ``hint`` wants it (an int for a float, one path for a list), or a ValueError."""
    inner = _unwrap_optional(hint)
    if value is None:
        if inner is not hint:
            return None
        raise ValueError(f"{where}: expected {_kind(inner)}, got null")
    if typing.get_origin(inner) is list:
        (item,) = typing.get_args(inner)
        values = [value] if isinstance(value, str) else value  # one path given where a list is expected
        if not isinstance(values, list):
            raise ValueError(f"{where}: expected a list (of {_kind(item)}), got {value!r}")
        return [_check_value(item, v, f"{where}[{i}]") for i, v in enumerate(values)]
    if typing.get_origin(inner) is typing.Literal:
        choices = typing.get_args(inner)
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            raise ValueError(f"{where}: expected one of {list(choices)}, got {value!r}")
        return value
    if inner is bool:
        if isinstance(value, str):
            try:
                return str2bool(value)
            except argparse.ArgumentTypeError as e:
                raise ValueError(f"{where}: {e}") from None
        ok = isinstance(value, bool)
    elif inner is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif inner is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif inner is str:
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise ValueError(f"{where}: expected {_kind(inner)}, got {value!r}")
    return value


def _checked_settings(cls: type, settings: dict[str, Any], source: str) -> dict[str, Any]:
    """``settings`` with names checked against the fields of ``cls`` and values against their types."""
    names = [f.name for f in _settings_fields(cls)]
    unknown = [k for k in settings if k not in names]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "the --help of the command lists the settings"
        raise ValueError(f"{source}: unknown setting(s) {', '.join(map(repr, unknown))} ({hint})")
    hints = typing.get_type_hints(cls)
    return {k: _check_value(hints[k], v, f"{source}: {k}") for k, v in settings.items()}


def _build(cls: type[T], values: dict[str, Any], source: str | None) -> T:
    """``cls(**values)``; errors start with ``source:`` when the values came from a file."""
    prefix = f"{source}: " if source else ""
    missing = [f for f in _settings_fields(cls) if _is_required(f) and f.name not in values]
    if missing:
        shown = ", ".join(f.name.upper() if f.metadata.get("positional") else f"--{f.name}" for f in missing)
        raise ValueError(f"{prefix}missing required setting(s) {shown} (give them as arguments or in --config FILE)")
    try:
        return cls(**values)
    except TypeError as e:
        raise ValueError(f"{prefix}{e}") from None


def dataclass_from_settings(cls: type[T], settings: dict[str, Any], *, source: str = "settings") -> T:
    """Build ``cls`` from a dict (e.g. stored with a model), rejecting unknown names and wrongly typed values."""
    return _build(cls, _checked_settings(cls, settings, source), source)


def dataclass_from_namespace(cls: type[T], namespace: argparse.Namespace) -> T:
    """Defaults, then the ``--config`` file, then the arguments present in ``namespace``."""
    settings: dict[str, Any] = {}
    config = getattr(namespace, "config", None)
    if config:
        settings.update(_checked_settings(cls, load_settings_file(config), str(config)))
    names = {f.name for f in _settings_fields(cls)}
    settings.update({k: v for k, v in vars(namespace).items() if k in names})
    return _build(cls, settings, config)


def save_settings(obj: Any, path: str | os.PathLike) -> None:
    """Write a dataclass instance as JSON (loadable again with ``--config``)."""
    from nezha.io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(dataclasses.asdict(obj), indent=2, ensure_ascii=False, default=str) + "\n")
