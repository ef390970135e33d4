"""Run settings as dataclasses: each field is one flag, settable from the command line and from a JSON/YAML file.

Precedence: dataclass default < ``--config`` file < flags given on the command line. Field help comes from
``field(metadata={"help": ...})`` (use :func:`arg`). Booleans accept ``--flag``, ``--flag=True`` and
``--flag=False`` (the original scripts' style). Validation belongs in the dataclass's ``__post_init__``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def str2bool(value: str) -> bool:
    """Parse the original scripts' ``--do_lower_case=True`` style booleans."""
    v = value.strip().lower()
    if v in ("true", "1", "yes", "y", "t"):
        return True
    if v in ("false", "0", "no", "n", "f"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def arg(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:  # noqa: A002
    """A dataclass field with help text (and a ``default_factory`` for lists)."""
    metadata = {"help": help}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda d=default: list(d), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def _unwrap_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, *, exclude: tuple[str, ...] = ()) -> None:
    """Add one flag per field of ``cls`` (plus ``--config FILE``). Unset flags stay absent from the namespace."""
    hints = typing.get_type_hints(cls)
    parser.add_argument("--config", default=argparse.SUPPRESS, metavar="FILE",
                        help="JSON (or YAML, with pyyaml installed) file of settings; flags given here override it")
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        hint = _unwrap_optional(hints[f.name])
        help_ = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if default is not None and default != [] and default != "":
            help_ = f"{help_} (default: {default})"
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_, "dest": f.name}
        if hint is bool:
            kw.update(type=str2bool, nargs="?", const=True, metavar="BOOL")
        elif typing.get_origin(hint) is list:
            (inner,) = typing.get_args(hint)
            kw.update(type=inner, nargs="+")
        elif typing.get_origin(hint) is typing.Literal:
            choices = typing.get_args(hint)
            kw.update(type=type(choices[0]), choices=choices)
        elif hint in (int, float, str):
            kw.update(type=hint)
        else:
            kw.update(type=str)
        parser.add_argument(f"--{f.name}", **kw)


def load_settings_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON (``.json``) or YAML (``.yaml``/``.yml``) mapping of field names to values."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: file not found: {path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs pyyaml (pip install pyyaml), or use a JSON file") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of setting names to values")
    return data


def dataclass_from_settings(cls: type[T], settings: dict[str, Any], *, source: str = "settings") -> T:
    """Build ``cls`` from a dict, rejecting unknown names (a typo would otherwise be ignored silently)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {unknown}; known: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for k, v in settings.items():
        hint = _unwrap_optional(hints[k])
        if typing.get_origin(hint) is list and isinstance(v, (str, os.PathLike)):
            v = [v]  # one path given where a list is expected
        if hint is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        values[k] = v
    try:
        return cls(**values)
    except TypeError as e:
        raise ValueError(f"{source}: {e}") from None


def dataclass_from_namespace(cls: type[T], namespace: argparse.Namespace) -> T:
    """Defaults, then the ``--config`` file, then the flags present in ``namespace``."""
    settings: dict[str, Any] = {}
    source = "command line"
    config = getattr(namespace, "config", None)
    if config:
        settings.update(load_settings_file(config))
        source = f"{config} + command line"
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    settings.update({k: v for k, v in vars(namespace).items() if k in names})
    return dataclass_from_settings(cls, settings, source=source)


def save_settings(obj: Any, path: str | os.PathLike) -> None:
    """Write a dataclass instance as JSON (loadable again with ``--config``)."""
    from nezha.io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(dataclasses.asdict(obj), indent=2, ensure_ascii=False, default=str) + "\n")
