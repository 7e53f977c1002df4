"""The declarative machinery of the settings: :func:`setting` fields, their
:class:`SettingSpec` records and checks, and :class:`Rule`.

The sections register themselves in ``_SECTIONS`` when :mod:`skymorph.config`
defines :class:`~skymorph.config.Config` (its fields are the one list of sections).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import SkymorphError


class ConfigError(SkymorphError, ValueError):
    """A setting is unknown or has an unusable value."""


@dataclass(frozen=True)
class Rule:
    """A condition on settings that a value's type, choices and range cannot say.

    A section lists its rules in ``rules`` (they read that section); :class:`Config`
    lists the rules across sections in ``CROSS_RULES``, each checked when a stage that
    reads ``section`` runs (:meth:`Config.check`).

    Parameters
    ----------
    holds : callable
        ``holds(settings) -> bool``: true when the settings are usable.
    message : callable
        ``message(settings) -> str``: the sentence that says what to fix.
    section : str
        The section whose stage needs the rule (cross-section rules only).
    """

    holds: Any
    message: Any
    section: str = ""

    def check(self, settings: Any) -> None:
        """Raise :class:`ConfigError` with the rule's sentence unless it holds."""
        if not self.holds(settings):
            raise ConfigError(self.message(settings))


class Section:
    """Base of the settings sections: every value and rule is checked on construction
    (``dataclasses.replace`` included), so a section never holds an unusable value.

    A stage of another package declares its own section as a dataclass deriving from this
    one, with :func:`setting` fields (``Stage(settings=...)``, see docs/architecture.md).
    """

    rules: ClassVar[tuple[Rule, ...]] = ()

    def __post_init__(self) -> None:
        for name, spec in _specs(_SECTION_OF[type(self)]).items():
            spec.check(getattr(self, name))
        for rule in self.rules:
            rule.check(self)


def setting(
    default: Any,
    help: str,
    *,
    choices: Sequence[Any] | None = None,
    min: float | None = None,
    max: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    result: bool = True,
    flag: str | None = None,
    metavar: str | None = None,
    execution: bool | None = None,
) -> Any:
    """A dataclass field that carries its own documentation and checks.

    Parameters
    ----------
    default : object
        Default value (lists are copied for every instance).
    help : str
        One-paragraph help; ``--help`` and the docs show it.
    choices : sequence, optional
        Allowed values (for a list setting: allowed items).
    min, max : float, optional
        Inclusive range of a number (of each item of a list).
    gt, lt : float, optional
        Exclusive bounds (an open interval), e.g. ``gt=0`` for a positive rate.
    result : bool
        Whether the value changes the stage's result.  ``False`` for settings that
        only change how the work is run (workers, batch sizes, device, threads):
        they are left out of the stage fingerprint, so changing them reuses the output.
    flag : str, optional
        Command-line flag of the stage sub-command (e.g. ``--k``); every setting can
        also be given as ``--set SECTION.KEY=VALUE``.
    metavar : str, optional
        Placeholder shown for the value in ``--help``.
    execution : bool, optional
        Whether the setting only says how one command runs (scheduler, workers, batch
        sizes, device, threads): given on the command line or as a keyword it applies
        to that command only and is not recorded in ``config.toml`` (unless asked:
        ``--save-settings``).  By default ``not result``; a switch that changes what
        the later stages read (``denoise.enabled``) sets ``execution=False``.
    """
    meta = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "min": min,
        "max": max,
        "gt": gt,
        "lt": lt,
        "result": result,
        "flag": flag,
        "metavar": metavar,
        "execution": (not result) if execution is None else bool(execution),
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)



_SECTIONS: dict[str, type] = {}
"""Section name -> its settings class, in order: the fields of :class:`Config` (one place to add one).
Filled by :mod:`skymorph.config` once ``Config`` is defined."""
_SECTION_OF: dict[type, str] = {}
_BUILT_IN: set[str] = set()
"""The sections of :class:`~skymorph.config.Config`'s own fields (the others are added by
:func:`register_section`)."""


def register_section(name: str, settings: type) -> None:
    """Add the settings section ``[name]`` of a stage from another package.

    Parameters
    ----------
    name : str
        The section's name: the stage's.
    settings : type
        A dataclass deriving from :class:`Section` whose fields are :func:`setting` fields,
        each with a default.

    Raises
    ------
    ConfigError
        If ``name`` is a built-in section or is taken by another class, or ``settings`` is
        not such a dataclass.
    """
    if name in _BUILT_IN:
        raise ConfigError(f"[{name}] is a built-in settings section; a stage of another package "
                          "declares a section named after itself")
    if not (isinstance(settings, type) and issubclass(settings, Section)
            and dataclasses.is_dataclass(settings)):
        raise ConfigError(f"the settings of [{name}] must be a dataclass deriving from "
                          "skymorph.config.Section, with setting(...) fields")
    if _SECTIONS.get(name, settings) is not settings:
        raise ConfigError(f"[{name}] is already declared by {_SECTIONS[name].__qualname__}")
    _SECTIONS[name] = settings
    _SECTION_OF[settings] = name
    _specs.cache_clear()
    try:
        settings()  # every setting has a default, and the defaults pass the checks
    except (ConfigError, TypeError) as exc:
        del _SECTIONS[name], _SECTION_OF[settings]
        raise ConfigError(f"the default settings of [{name}] are not usable: {exc}") from None


@dataclass(frozen=True)
class SettingSpec:
    """What :func:`setting` recorded about one setting, plus its type."""

    section: str
    name: str
    annotation: str
    default: Any
    help: str
    choices: tuple[Any, ...] | None
    min: float | None
    max: float | None
    result: bool
    flag: str | None
    metavar: str | None
    execution: bool = False
    """Applies to one command only; not recorded from the command line (see :func:`setting`)."""
    gt: float | None = None
    lt: float | None = None

    @property
    def key(self) -> str:
        """``section.name``, as written after ``--set``."""
        return f"{self.section}.{self.name}"

    def describe(self) -> str:
        """What values are allowed, in words (for errors and ``--help``)."""
        text = " or ".join(_TYPE_WORDS.get(a, a) for a in _alternatives(self.annotation))
        if self.choices:
            text += "; one of " + ", ".join(repr(c) for c in self.choices)
        if any(b is not None for b in (self.min, self.max, self.gt, self.lt)):
            low = (f"({self.gt:g}" if self.gt is not None else
                   "[-inf" if self.min is None else f"[{self.min:g}")
            high = (f"{self.lt:g})" if self.lt is not None else
                    "inf]" if self.max is None else f"{self.max:g}]")
            text += f"; in {low}, {high}"
        return text

    def check(self, value: Any) -> Any:
        """``value`` if it is allowed (an int becomes a float for a float setting).

        Raises
        ------
        ConfigError
            Naming the setting, the value and what is allowed.
        """
        for alternative in _alternatives(self.annotation):
            ok, coerced = _coerce(value, alternative)
            if ok and self._in_range(coerced):
                return coerced
        raise ConfigError(
            f"{self.key} = {value!r} is not allowed: expected {self.describe()} (default {self.default!r})"
        )

    def _in_range(self, value: Any) -> bool:
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, str) and self.choices is not None and item not in self.choices:
                return False
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                if self.min is not None and item < self.min:
                    return False
                if self.max is not None and item > self.max:
                    return False
                if self.gt is not None and not item > self.gt:
                    return False
                if self.lt is not None and not item < self.lt:
                    return False
                if (
                    self.choices is not None
                    and item not in self.choices
                    and not any(isinstance(c, str) for c in self.choices)
                ):
                    return False
        return True


_TYPE_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "None": "unset",
    "list[int]": "a list of integers",
    "list[float]": "a list of numbers",
    "list[str]": "a list of strings",
}


def _alternatives(annotation: str) -> list[str]:
    return [a.strip() for a in annotation.split("|")]


def _coerce(value: Any, alternative: str) -> tuple[bool, Any]:
    if alternative == "None":
        return value is None, value
    if alternative.startswith("list[") and alternative.endswith("]"):
        if not isinstance(value, (list, tuple)):
            return False, value
        items = [_coerce(v, alternative[5:-1]) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if alternative == "bool":
        return isinstance(value, bool), value
    if isinstance(value, bool):
        return False, value
    if alternative == "int":
        return isinstance(value, int), value
    if alternative == "float":
        ok = isinstance(value, (int, float))
        return ok, float(value) if ok else value
    if alternative == "str":
        return isinstance(value, str), value
    raise TypeError(f"unsupported setting annotation {alternative!r}")


def section_settings(section: str) -> dict[str, SettingSpec]:
    """Every setting of one config section, by name.

    Raises
    ------
    ConfigError
        If the section does not exist.
    """
    if section not in _SECTIONS:
        raise ConfigError(f"unknown config section [{section}]; sections are: {', '.join(_SECTIONS)}")
    return _specs(section)


@functools.cache
def _specs(section: str) -> dict[str, SettingSpec]:
    specs = {}
    for f in dataclasses.fields(_SECTIONS[section]):
        meta = f.metadata
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        specs[f.name] = SettingSpec(
            section=section,
            name=f.name,
            annotation=_annotation(f.type),
            default=default,
            help=meta.get("help", ""),
            choices=meta.get("choices"),
            min=meta.get("min"),
            max=meta.get("max"),
            result=meta.get("result", True),
            flag=meta.get("flag"),
            metavar=meta.get("metavar"),
            execution=meta.get("execution", not meta.get("result", True)),
            gt=meta.get("gt"),
            lt=meta.get("lt"),
        )
    return specs


def _annotation(kind: Any) -> str:
    """The annotation as text (``float | None``), whether or not its module postpones them."""
    if isinstance(kind, str):
        return kind
    return kind.__name__ if kind in (int, float, str, bool) else str(kind)


def all_settings() -> list[SettingSpec]:
    """Every setting of every section, in declaration order."""
    return [spec for section in _SECTIONS for spec in _specs(section).values()]
