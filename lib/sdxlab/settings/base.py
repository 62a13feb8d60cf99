"""The machinery behind every stage's settings: one dataclass field = default + help + allowed values.

A stage declares its settings as a dataclass whose fields are made with `setting(...)` (the shape of peft's
`LoraConfig`: `field(default=..., metadata={"help": ...})`, checked in `__post_init__`). From that one
declaration follow the notebook's parameters cell, the runner's checks, `--help` and the profiles' test.

A field's notebook parameter is the stage's prefix plus the field's name (`train_steps`), unless the field
names its parameter itself (`photos_dir`, `clip_model`). Fields made with `internal(...)` are plain settings the
library sets (folders, hooks) and never notebook parameters.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal, Union

Check = Callable[[Any], "str | None"]  # a value -> None when fine, else what is allowed ("a multiple of 8")


class SettingsError(ValueError):
    """One bad setting: the message is one sentence naming the parameter, the value and what is allowed."""


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple | list | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    below: float | None = None,
    above: float | None = None,
    check: Check | None = None,
    parameter: str | None = None,
    secret: bool = False,
) -> Any:
    """One declared setting: its default, its help (the notebook comment) and what values it allows.

    `minimum`/`maximum` are inclusive bounds, `above`/`below` exclusive ones; `check` adds a rule the others
    cannot say (it returns None or what is allowed); `parameter` names the notebook parameter when it is not
    the stage's prefix plus the field's name; `secret` keeps a refused value out of the message (a key pasted
    into the wrong parameter must not land in a log).
    """
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "minimum": minimum,
        "maximum": maximum,
        "below": below,
        "above": above,
        "check": check,
        "parameter": parameter,
        "secret": secret,
    }
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def internal(default: Any = None, *, default_factory: Callable[[], Any] | None = None) -> Any:
    """A setting the library fills in (a folder, a hook), not a notebook parameter."""
    if default_factory is not None:
        return field(default_factory=default_factory, metadata={"internal": True})
    return field(default=default, metadata={"internal": True})


def like(owner: type, name: str, *, default: Any = dataclasses.MISSING, help: str | None = None, **changes: Any) -> Any:
    """A field declared like `owner.name` (same help, type rules and checks), optionally with this stage's default.

    Used for the common block (`like(CommonSettings, "resolution")`) and the generation settings a stage
    exposes (`like(GenerationSettings, "steps", default=8)`): the rules live in one place.
    """
    source = _field(owner, name)
    metadata = dict(source.metadata)
    metadata["like"] = (owner, name)
    if help is not None:
        metadata["help"] = help
    metadata.update(changes)
    if default is dataclasses.MISSING:
        default = source.default if source.default is not dataclasses.MISSING else source.default_factory()
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _field(owner: type, name: str) -> dataclasses.Field:
    for item in dataclasses.fields(owner):
        if item.name == name:
            return item
    raise AttributeError(f"{owner.__name__} declares no setting {name!r}")


@dataclass(frozen=True)
class Parameter:
    """One notebook parameter as declared: its name, the field behind it, default, help and type."""

    name: str  # the notebook's name, e.g. train_steps
    field_name: str  # the dataclass field, e.g. steps
    default: Any
    help: str
    annotation: Any
    metadata: Mapping[str, Any]
    owner: type

    @property
    def common(self) -> bool:
        """Whether it belongs to the common block every notebook starts with."""
        from sdxlab.settings.common import CommonSettings

        return self.owner is CommonSettings or self.metadata.get("like", (None,))[0] is CommonSettings

    def allowed(self) -> str:
        """What values are allowed, in words ("a whole number of at least 1")."""
        return _describe(self.annotation, self.metadata)

    def check(self, value: Any, error: type[Exception] = SettingsError) -> Any:
        """The value converted to the declared type (numeric text to a number), or one clear error."""
        converted, ok = _convert(value, self.annotation)
        problem = None if ok else self.allowed()
        if problem is None and _range_problem(converted, self.metadata):
            problem = self.allowed()
        if problem is None and self.metadata.get("check") is not None and converted is not None:
            problem = self.metadata["check"](converted)
        if problem:
            got = "the value is not shown: it may be a secret" if self.metadata.get("secret") else f"got {value!r}"
            raise error(f"{self.name} must be {problem} ({got}).")
        return converted


class Settings:
    """Base of every stage's settings dataclass: construction checks every declared field once.

    Subclasses set `prefix` (notebook names are prefix + field name) and may set `error` (the exception
    raised for a bad value; a subclass of SettingsError).
    """

    prefix: ClassVar[str] = ""
    title: ClassVar[str] = ""  # "training": "Unknown training parameter train_stpes"
    error: ClassVar[type[Exception]] = SettingsError

    def __post_init__(self) -> None:
        for parameter in self.declared():
            setattr(self, parameter.field_name, parameter.check(getattr(self, parameter.field_name), self.error))

    @classmethod
    def declared(cls) -> list[Parameter]:
        """The notebook parameters this stage reads, in declaration order (common ones included)."""
        return list(_declared(cls))

    @classmethod
    def stage_parameters(cls) -> list[Parameter]:
        """The parameters that follow the common block in the stage's parameters cell."""
        return [parameter for parameter in _declared(cls) if not parameter.common]

    @classmethod
    def from_parameters(cls, namespace: Mapping[str, Any], **overrides: Any):
        """Build from a notebook's variables (`globals()`) or a runner's mapping; `overrides` by field name.

        The common block in `namespace` is checked too, and a name with this stage's prefix that the stage
        does not declare is an error (a typo never silently runs with the default).
        """
        from sdxlab.settings.common import CommonSettings

        if cls is not CommonSettings:
            CommonSettings.check_namespace(namespace)
        by_name = {parameter.name: parameter for parameter in _declared(cls)}
        if cls.prefix:
            unknown = sorted(
                key
                for key, value in namespace.items()
                if key.startswith(cls.prefix)
                and key not in by_name
                and not key.startswith("_")
                and not callable(value)
                and not isinstance(value, types.ModuleType)
            )
            if unknown:
                title = f"{cls.title} " if cls.title else ""
                raise cls.error(
                    f"Unknown {title}parameter {', '.join(unknown)}; valid ones: "
                    f"{', '.join(sorted(n for n in by_name if n.startswith(cls.prefix)))}."
                )
        values = {parameter.field_name: namespace[name] for name, parameter in by_name.items() if name in namespace}
        values.update(overrides)
        return cls(**values)

    @classmethod
    def check_namespace(cls, namespace: Mapping[str, Any]) -> None:
        """Check the values of the parameters this class declares that `namespace` holds."""
        for parameter in _declared(cls):
            if parameter.name in namespace:
                parameter.check(namespace[parameter.name], cls.error)

    def parameters(self) -> dict[str, Any]:
        """The settings under their notebook names."""
        return {parameter.name: getattr(self, parameter.field_name) for parameter in self.declared()}


@cache
def _declared(cls: type) -> tuple[Parameter, ...]:
    hints = typing.get_type_hints(cls)
    found = []
    for item in dataclasses.fields(cls):
        if "help" not in item.metadata:
            continue
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        name = item.metadata.get("parameter") or f"{cls.prefix}{item.name}"
        if item.metadata.get("like") and item.metadata["like"][0].__name__ == "CommonSettings":
            name = item.metadata.get("parameter") or item.name
        found.append(Parameter(name, item.name, default, item.metadata["help"], hints[item.name], item.metadata, cls))
    return tuple(found)


# --- types: conversion and description ------------------------------------------------------------------------


def _options(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [option for arg in typing.get_args(annotation) for option in _options(arg)]
    return [annotation]


def _convert(value: Any, annotation: Any) -> tuple[Any, bool]:
    """(value in the declared type, True) or (value, False) when it does not fit."""
    for option in _options(annotation):
        converted, ok = _convert_one(value, option)
        if ok:
            return converted, True
    return value, False


def _number(text: str) -> float | None:
    try:
        number = float(text.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _convert_one(value: Any, option: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(option)
    if option is Any:
        return value, True
    if option is type(None):
        return None, value is None
    if origin is Literal:
        return value, any(value == choice and type(value) is type(choice) for choice in typing.get_args(option))
    if option is bool:
        return value, isinstance(value, bool)
    if option is int:
        if isinstance(value, str) and (number := _number(value)) is not None and number.is_integer():
            return int(number), True  # "1e3" from YAML 1.1
        return value, isinstance(value, int) and not isinstance(value, bool)
    if option is float:
        if isinstance(value, str) and (number := _number(value)) is not None:
            return number, True  # YAML 1.1 reads 5e-4 as text
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), math.isfinite(value)
        return value, False
    if option is str:
        return value, isinstance(value, str)
    if option is Path:
        return (Path(value), True) if isinstance(value, (str, Path)) else (value, False)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return value, False
        (item_type, *_) = typing.get_args(option) or (Any,)
        items = [_convert(item, item_type) for item in value]
        return [item for item, _ in items], all(ok for _, ok in items)
    if origin is dict:
        if not isinstance(value, dict):
            return value, False
        key_type, value_type = typing.get_args(option) or (Any, Any)
        pairs = [(_convert(k, key_type), _convert(v, value_type)) for k, v in value.items()]
        return {k: v for (k, _), (v, _) in pairs}, all(a and b for (_, a), (_, b) in pairs)
    raise TypeError(f"setting type {option!r} is not supported")


def _describe_one(option: Any) -> str:
    origin = typing.get_origin(option)
    if option is type(None):
        return "None"
    if origin is Literal:
        return " or ".join(repr(choice) for choice in typing.get_args(option))
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(option) or (Any,)
        return f"a list of {_plural(item_type)}"
    if origin is dict:
        key_type, value_type = typing.get_args(option) or (Any, Any)
        return f"a mapping of {_plural(key_type)} to {_plural(value_type)}"
    return {
        bool: "True or False",
        int: "a whole number",
        float: "a number",
        str: "text",
        Path: "a path",
        Any: "any value",
    }[option]


def _plural(option: Any) -> str:
    return {int: "whole numbers", float: "numbers", str: "texts", bool: "True/False values"}.get(
        option, _describe_one(option)
    )


def _bounds(metadata: Mapping[str, Any]) -> str:
    low, high = metadata.get("minimum"), metadata.get("maximum")
    if low is not None and high is not None and metadata.get("above") is None and metadata.get("below") is None:
        return f"from {low:g} to {high:g}"
    parts = []
    if metadata.get("minimum") is not None:
        parts.append(f"at least {metadata['minimum']:g}")
    if metadata.get("above") is not None:
        parts.append(f"above {metadata['above']:g}")
    if metadata.get("maximum") is not None:
        parts.append(f"at most {metadata['maximum']:g}")
    if metadata.get("below") is not None:
        parts.append(f"below {metadata['below']:g}")
    return " and ".join(parts)


def _describe(annotation: Any, metadata: Mapping[str, Any]) -> str:
    if metadata.get("choices"):
        words = ", ".join(repr(choice) for choice in metadata["choices"])
        return f"one of {words}"
    options = _options(annotation)
    bounds = _bounds(metadata)
    words = []
    for option in options:
        text = _describe_one(option)
        if bounds and option in (int, float):
            text = f"{text} {'of ' if bounds.startswith('at') else ''}{bounds}"
        words.append(text)
    if "None" in words and len(words) > 1:  # "None or ..." reads better than "... or None"
        words.remove("None")
        words.insert(0, "None")
    return " or ".join(words)


def _range_problem(value: Any, metadata: Mapping[str, Any]) -> str | None:
    if metadata.get("choices") and value not in metadata["choices"]:
        return f"one of {', '.join(repr(choice) for choice in metadata['choices'])}"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    low, high, above, below = (metadata.get(key) for key in ("minimum", "maximum", "above", "below"))
    if (
        (low is not None and value < low)
        or (high is not None and value > high)
        or (above is not None and value <= above)
        or (below is not None and value >= below)
    ):
        return "in range"
    return None
