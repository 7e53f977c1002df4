"""Settings for every stage, in one explicit object.

A :class:`Config` holds one section per pipeline stage.  It is built from a
preset (``default`` or ``paper``), optionally updated from a TOML file and from
command-line flags, and recorded in ``RUN_DIR/config.toml`` by every stage that
runs.  Nothing in skymorph reads settings from anywhere else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._analysis import (
    AnomalyConfig,
    ComputeConfig,
    ExtendConfig,
    InspectConfig,
    MeasureConfig,
    SimilarConfig,
    SubdivideConfig,
    ValidateConfig,
)
from ._fields import (
    _BUILT_IN,
    _SECTION_OF,
    _SECTIONS,
    ConfigError,
    Rule,
    Section,
    SettingSpec,  # noqa: F401 - re-exported: public since before the split
    _specs,
    all_settings,  # noqa: F401 - re-exported
    register_section,
    section_settings,
    setting,  # noqa: F401 - re-exported
)
from ._pipeline import (
    ClusterConfig,
    DenoiseConfig,
    EncodeConfig,
    IngestConfig,
    PolarConfig,
    ReduceConfig,
)

__all__ = [
    "Config",
    "ConfigError",
    "IngestConfig",
    "DenoiseConfig",
    "PolarConfig",
    "EncodeConfig",
    "ReduceConfig",
    "ClusterConfig",
    "InspectConfig",
    "MeasureConfig",
    "ExtendConfig",
    "ValidateConfig",
    "ComputeConfig",
    "SimilarConfig",
    "AnomalyConfig",
    "SubdivideConfig",
    "PRESETS",
    "Rule",
    "Section",
    "register_section",
    "load_config",
    "read_settings",
]

log = logging.getLogger(__name__)


@dataclass
class Config:
    """All settings of a run, one section per stage."""

    ingest: IngestConfig = field(default_factory=IngestConfig)
    denoise: DenoiseConfig = field(default_factory=DenoiseConfig)
    polar: PolarConfig = field(default_factory=PolarConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    reduce: ReduceConfig = field(default_factory=ReduceConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    inspect: InspectConfig = field(default_factory=InspectConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    extend: ExtendConfig = field(default_factory=ExtendConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    similar: SimilarConfig = field(default_factory=SimilarConfig)
    anomaly: AnomalyConfig = field(default_factory=AnomalyConfig)
    subdivide: SubdivideConfig = field(default_factory=SubdivideConfig)
    plugins: dict[str, Any] = field(default_factory=dict, repr=False)
    """The sections of stages from other packages that differ from their defaults, by name
    (read like the others: ``config.brightness``, :meth:`section`).  A section that no installed
    package declares (a run directory written where that package was installed) is kept here as
    the table it was read from, unchecked, and written back unchanged."""

    def __getattr__(self, name: str) -> Any:
        # only reached for names that are not attributes: the sections of other packages
        if name.startswith("_") or name == "plugins":
            raise AttributeError(name)
        try:
            return self.section(name)
        except ConfigError:
            raise AttributeError(f"Config has no section {name!r}") from None

    def sections(self) -> list[str]:
        """The name of every section: the built-in ones, those that stages of other packages
        declared (:func:`register_section`), and the unchecked ones of :attr:`plugins`."""
        return [*_SECTIONS, *(name for name in self.plugins if name not in _SECTIONS)]

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dictionary of every setting."""
        return {name: _table(self.section(name)) for name in self.sections()}

    def update(self, values: dict[str, Any], *, keep_unknown: bool = False) -> Config:
        """Return a copy with ``{section: {key: value}}`` applied.

        Every value is checked against its setting's type, allowed values and range
        before anything is changed, so a bad value never reaches ``config.toml``.
        An integer is accepted for a float setting.  A section named after a stage of an
        installed package is declared by importing that package's stage module.

        Parameters
        ----------
        values : dict
            ``{section: {key: value}}``.
        keep_unknown : bool
            Keep a section that nothing declares in :attr:`plugins`, unchecked and with a
            warning, instead of raising (for a run directory's own ``config.toml``).

        Raises
        ------
        ConfigError
            If a section or key does not exist, or a value is of the wrong type or
            out of range; the message names the setting, the value and what is allowed.
        """
        new = dataclasses.replace(self, plugins=dict(self.plugins))
        for section, entries in values.items():
            if section not in _SECTIONS:
                _declare_plugin_section(section)
            if not isinstance(entries, dict):
                raise ConfigError(f"config section [{section}] must be a table of settings")
            if section not in _SECTIONS:
                if not keep_unknown:
                    raise ConfigError(f"unknown config section [{section}]; sections are: "
                                      f"{', '.join(_SECTIONS)} (or that of an installed package's stage)")
                log.warning("config section [%s] is kept as written, unchecked: no installed package "
                            "declares it", section)
                new.plugins[section] = {**new.plugins.get(section, {}), **entries}
                continue
            current = new.section(section)
            specs = section_settings(section)
            unknown = sorted(set(entries) - set(specs))
            if unknown:
                raise ConfigError(
                    f"unknown setting(s) {', '.join(unknown)} in [{section}]; "
                    f"valid settings: {', '.join(sorted(specs))}"
                )
            checked = {key: specs[key].check(value) for key, value in entries.items()}
            if section in _BUILT_IN:
                setattr(new, section, dataclasses.replace(current, **checked))
            else:
                new.plugins[section] = dataclasses.replace(current, **checked)
        return new

    def section(self, name: str) -> Any:
        """The settings of one stage (for a stage of another package, its defaults until set).

        Raises
        ------
        ConfigError
            If no section has that name.
        """
        if name in _BUILT_IN:
            return getattr(self, name)
        if name in self.plugins:
            return self.plugins[name]
        if name in _SECTIONS:
            return _SECTIONS[name]()
        raise ConfigError(f"unknown config section [{name}]; sections are: {', '.join(self.sections())}")

    def check(self, *sections: str) -> None:
        """Check the rules across sections (``CROSS_RULES``) that the stages reading
        ``sections`` need; each section's own values and rules were checked when it was made.

        Raises
        ------
        ConfigError
            The first rule that does not hold, with the sentence that says what to fix.
        """
        for rule in CROSS_RULES:
            if rule.section in sections:
                rule.check(self)

    def result_settings(self, *sections: str) -> dict[str, dict[str, Any]]:
        """The settings of ``sections`` that change a stage's result (see :func:`setting`)."""
        return {
            s: {
                key: getattr(self.section(s), key)
                for key, spec in section_settings(s).items()
                if spec.result
            }
            for s in sections
        }

    def with_execution_settings(self, source: Config) -> Config:
        """A copy whose execution-only settings (:func:`setting`'s ``execution``: scheduler,
        workers, batch sizes, device, threads) are those of ``source``; every other
        setting is this one's.  What ``config.toml`` records when the command line's
        execution-only values must apply to that command only."""
        return self.update({
            section: {key: getattr(source.section(section), key)
                      for key, spec in _specs(section).items() if spec.execution}
            for section in _SECTIONS
        })

    def fingerprint(self, *sections: str) -> str:
        """Stable hash of the result-changing settings of the named sections."""
        text = json.dumps(self.result_settings(*sections), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_toml(self) -> str:
        """TOML text of every setting (``None`` values are written as comments)."""
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            for key, value in values.items():
                if value is None:
                    lines.append(f"# {key} = (unset)")
                else:
                    lines.append(f"{key} = {_toml_value(value)}")
            lines.append("")
        return "\n".join(lines)



_SECTIONS.update({f.name: f.default_factory for f in dataclasses.fields(Config) if f.name != "plugins"})
_SECTION_OF.update({cls: name for name, cls in _SECTIONS.items()})
_BUILT_IN.update(_SECTIONS)


def _table(section: Any) -> dict[str, Any]:
    return dict(section) if isinstance(section, dict) else dataclasses.asdict(section)


def _declare_plugin_section(name: str) -> None:
    """Import the stage module of the installed package whose stage is called ``name``: its
    ``Stage(settings=...)`` declares the section ``[name]``."""
    from ..registry import plugins

    plugin = plugins().get(name)
    if plugin is None:
        return
    try:
        importlib.import_module(plugin.target.partition(":")[0])
    except Exception as exc:  # noqa: BLE001 - a broken plugin is named, not raised, here
        log.warning("the settings of [%s] cannot be declared: %s of %s fails to import (%s: %s)",
                    name, plugin.target, plugin.dist, type(exc).__name__, exc)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} to TOML")


def _etg_message(config: Config) -> str:
    types = [t.upper() for t in config.inspect.types]
    etg = config.validate.etg_types
    if not etg:
        return "validate.etg_types is empty: name at least one early type, e.g. ['SPH']"
    bad = [t for t in etg if t not in types]
    if bad:
        return f"validate.etg_types = {etg!r}: {', '.join(bad)} not in inspect.types ({types})"
    return (f"validate.etg_types = {etg!r} leaves no late type among {types[:-1]} "
            f"(the last type, {types[-1]}, is the unclassified one)")


def _etg_ok(config: Config) -> bool:
    types = [t.upper() for t in config.inspect.types]
    etg = config.validate.etg_types
    return bool(etg) and all(t in types for t in etg) and any(t not in etg for t in types[:-1])


CROSS_RULES: tuple[Rule, ...] = (
    Rule(_etg_ok, _etg_message, section="validate"),
    Rule(lambda c: c.reduce.projection != "nuisance" or not (c.denoise.enabled or c.polar.enabled),
         lambda c: "reduce.projection = nuisance copies the stamps the encoder reads, but this run encodes "
                   "denoised or polar images; switch denoise and polar off or use --projection whiten",
         section="reduce"),
)
"""Rules that read more than one section, each checked when the stage of ``section`` runs."""


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paper": {
        "denoise": {"enabled": True},
        "polar": {"enabled": True},
        "encode": {"encoder": "convnext_xlarge.fb_in22k", "rotations": 1, "input_size": 0},
        "reduce": {"dims": 300, "n_neighbors": 15},
        "cluster": {"k": 20},
    },
}
"""Named starting points.  ``default`` (= ``Config()``) runs offline on a laptop
CPU with the settings that measured best on labelled galaxies: EfficientNet-Lite2
features of the ingested stamps averaged over right-angle rotations.  ``paper`` is
the paper's chain: CAE, APCT and ConvNeXt-XL (ImageNet-22k) features."""


def load_config(
    path: str | Path | None = None, preset: str = "default", *, keep_unknown: bool = False
) -> Config:
    """Build a :class:`Config` from a preset and an optional TOML file.

    Parameters
    ----------
    path : str or Path, optional
        TOML file with ``[section]`` tables; its values override the preset.
    preset : str
        ``"default"`` or ``"paper"``.
    keep_unknown : bool
        Keep the sections that nothing declares (see :meth:`Config.update`).

    Returns
    -------
    Config
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    config = Config().update(PRESETS[preset])
    return config if path is None else config.update(read_settings(path), keep_unknown=keep_unknown)


def read_settings(path: str | Path) -> dict[str, Any]:
    """The ``{section: {key: value}}`` tables of a TOML settings file.

    Raises
    ------
    ConfigError
        If the file does not exist or is not valid TOML.
    """
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
