"""The stage registry and the one executor that every stage runs through.

A stage declares what it is (:class:`Stage`): its name, the config sections whose
settings change its result, the stages whose outputs it reads (resolved from the
settings, so the pipeline graph is defined here once), the files it writes and a
``compute`` function that knows nothing of the command line.  :func:`execute` runs
the prologue that every stage shares:

1. settings: the given ``Config``, or else the run's own ``config.toml`` (exactly
   what the command line does), with keyword overrides of the stage's section,
   all checked before anything is recorded;
2. a stage that is switched off in the settings (``denoise.enabled``) but run by
   hand is switched on, and the change is printed and recorded in ``config.toml``
   so that the stages after it read its output;
3. the run directory is locked against a second writer;
4. fingerprint of the result-changing settings, the upstream fingerprints and the
   stage's own extra inputs; when it matches and the outputs exist (and no
   ``force``), the stage is skipped;
5. otherwise: open the compute session of a chunked stage (``[compute]
   scheduler``: the local pool, or a Dask cluster, which must answer before
   anything is touched; see :mod:`skymorph.core.compute`), forget the old result,
   record the settings, compute, record the fingerprint and the summary, and drop
   the stage's resume records (:mod:`skymorph.io.chunklog`).

A stage of another package (the entry-point group ``skymorph.stages``, see
:func:`skymorph.registry.plugins`) runs through the same executor.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..config import _SECTIONS, Config, ConfigError, IngestConfig, PolarConfig, register_section
from ..errors import SkymorphError
from ..io.rundir import RunDir, RunDirError
from ..registry import PIPELINE, STAGES, all_stages, plugins
from ..summaries import check_written

__all__ = ["Stage", "Argument", "StageContext", "STAGES", "PIPELINE", "PluginError", "get_stage", "execute",
           "image_source", "dependencies", "stamp_options", "apct_options"]

log = logging.getLogger(__name__)


class PluginError(SkymorphError, RuntimeError):
    """A stage of another package (entry-point group ``skymorph.stages``) cannot be used:
    its module fails to import, or what it names is not a fitting :class:`Stage`."""


@dataclass(frozen=True)
class Argument:
    """An input of a stage that is not a setting (input files, a truth table...).

    The command line turns it into an argparse argument (``name`` starting with
    ``--`` is an option, else a positional); the Python API takes it as a keyword.
    """

    name: str
    help: str
    nargs: str | None = None
    metavar: str | None = None
    required: bool = False
    action: str | None = None

    @property
    def dest(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


@dataclass
class StageContext:
    """What ``compute`` gets: the run, the final settings and the non-setting inputs."""

    run: RunDir
    config: Config
    options: dict[str, Any]
    progress: bool = True
    fingerprint: str = ""
    """The stage's fingerprint (set before ``compute`` runs; e.g. a resume key)."""
    state: dict[str, Any] = field(default_factory=dict)
    """Scratch space shared by ``extra`` and ``compute`` (e.g. the expanded input list)."""
    compute: Any = None
    """The :class:`skymorph.core.compute.Session` of a chunked stage (where its chunks run)."""


@dataclass(frozen=True)
class Stage:
    """Declaration of one pipeline stage."""

    name: str
    summary: str
    """One line for ``skymorph --help``."""
    compute: Callable[[StageContext], dict[str, Any]]
    """Does the work; returns the summary recorded in ``stages/<name>.json``."""
    sections: tuple[str, ...] = ()
    """Config sections whose result-changing settings are part of the fingerprint;
    the first is the stage's own (keyword overrides and command-line flags)."""
    upstream: Callable[[Config], tuple[str, ...]] = lambda config: ()
    """Stages whose outputs this one reads, resolved from the settings."""
    outputs: tuple[str, ...] = ()
    """Paths in the run directory that must exist for the stage to be reused."""
    extra: Callable[[StageContext], Any] | None = None
    """Other inputs that change the result (input files, a checkpoint's hash)."""
    switch: str | None = None
    """``section.key`` of a boolean that turns the stage on in the pipeline."""
    check: Callable[[Config], None] | None = None
    """Checks across settings, run before anything is written."""
    finish: Callable[[StageContext], None] | None = None
    """Runs after the stage, whether it computed or reused its output (e.g. joining
    its columns onto a catalog that a later ``cluster`` rewrote)."""
    always: bool = False
    """Recompute on every call (inputs that cannot be fingerprinted, e.g. tables
    given as DataFrames)."""
    creates_run: bool = False
    """The stage makes the run directory (``--out``) instead of reading one."""
    arguments: tuple[Argument, ...] = ()
    flags: tuple[str, ...] | None = None
    """``section.key`` of the settings the sub-command offers as flags; by default
    every setting of the stage's own section that declares a ``flag``."""
    report: Callable[[RunDir, dict[str, Any], dict[str, Any]], str] | None = None
    """``report(run, summary, options)``: what the command line prints once the
    stage has run (or was reused)."""
    description: str = ""
    """Longer text for ``skymorph STAGE --help``."""
    chunked: bool = False
    """The stage maps over chunks of galaxies: it runs where ``[compute] scheduler``
    says (the local pool or a Dask cluster) and resumes from its finished chunks."""
    depends: Callable[[Config], tuple[str, ...]] | None = None
    """Stages whose results this one's outputs are made from, beyond ``upstream`` (e.g. the
    clustering for the experts' types): when one of them is recomputed, this stage's
    outputs are stale (:meth:`RunDir.stale`).  Default: ``upstream``."""
    rejoin: Callable[[RunDir], None] | None = None
    """Joins this stage's columns onto a catalog that another stage rewrote (results that do
    not depend on that stage, e.g. the measurements after a new clustering, survive it)."""
    settings: type | None = None
    """The stage's own settings section, for a stage of another package: a dataclass deriving
    from :class:`skymorph.config.Section` with :func:`skymorph.config.setting` fields.  It is
    declared as ``[<name>]`` when the stage is (:func:`skymorph.config.register_section`) and
    comes first in :attr:`sections`.  The built-in stages' sections are fields of ``Config``."""

    def __post_init__(self) -> None:
        if self.settings is not None:
            register_section(self.name, self.settings)
            own = (self.name, *(s for s in self.sections if s != self.name))
            object.__setattr__(self, "sections", own)


# --- settings unpacked for the core functions that more than one stage calls ---------------
# (ingest and ``similar --image`` make stamps; polar and ``similar --image`` transform them)


def stamp_options(cfg: IngestConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`skymorph.core.stamps.make_stamp` that the ``[ingest]``
    settings give (``framing`` and the noise generator are chosen per image)."""
    return dict(stamp_size=cfg.stamp_size, min_size=cfg.min_size, recentre=cfg.recentre,
                frame_fraction=cfg.frame_fraction, max_nonfinite_fraction=cfg.max_nonfinite_fraction)


def apct_options(cfg: PolarConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`skymorph.core.apct.apct` that the ``[polar]`` settings give."""
    return dict(angle_step=cfg.angle_step, n_rays=cfg.n_rays, n_radii=cfg.n_radii, max_radius=cfg.max_radius,
                mirror=cfg.mirror, pole=cfg.pole, pole_radius=cfg.pole_radius, pole_smooth=cfg.pole_smooth)


def dependencies(name: str, config: Config) -> list[str]:
    """Every stage whose result the outputs of stage ``name`` are made from (transitively)."""
    seen: list[str] = []
    todo = [name]
    while todo:
        stage = get_stage(todo.pop())
        direct = stage.depends(config) if stage.depends is not None else stage.upstream(config)
        for dep in direct:
            if dep not in seen and dep != name:
                seen.append(dep)
                todo.append(dep)
    return [s for s in all_stages() if s in seen]


def _made_from(run: RunDir, name: str, config: Config) -> dict[str, str]:
    """Fingerprint of every finished stage that stage ``name``'s outputs are made from."""
    out = {}
    for dep in dependencies(name, config):
        info = run.stage_info(dep)
        if info is not None:
            out[dep] = info.get("fingerprint", "")
    return out


def _after_recompute(run: RunDir, name: str, config: Config) -> None:
    """After stage ``name`` recomputed: rejoin the surviving columns onto a rewritten catalog
    and say in one line which finished results are now stale."""
    stage = get_stage(name)
    if "catalog.parquet" in stage.outputs:
        for other in all_stages():
            if other == name or run.stage_info(other) is None or run.stale(other):
                continue
            declared = _usable(other)
            if declared is not None and declared.rejoin is not None:
                declared.rejoin(run)
    stale = [other for other in all_stages() if other != name and name in run.stale(other)]
    if stale:
        log.warning("%s: %s %s made from the previous %s and %s now stale (skymorph info lists "
                    "them); re-run %s", name, ", ".join(stale), "was" if len(stale) == 1 else "were",
                    name, "is" if len(stale) == 1 else "are", ", ".join(
                        f"`skymorph {_command(s)} {run.path}`" for s in stale))


def _command(stage: str) -> str:
    return f"inspect {stage}" if stage in ("montage", "merge") else stage


def get_stage(name: str) -> Stage:
    """The declaration of stage ``name``.

    Raises
    ------
    KeyError
        If there is no such stage.
    """
    if name in STAGES:
        module, _, attribute = STAGES[name].partition(":")
        return getattr(importlib.import_module(module), attribute)
    plugin = plugins().get(name)
    if plugin is None:
        raise KeyError(f"no stage {name!r}; stages are: {', '.join(all_stages())}")
    return _plugin_stage(plugin.name, plugin.target, plugin.dist)


def _plugin_stage(name: str, target: str, dist: str) -> Stage:
    """The declaration of a stage of another package, checked against what the executor needs.

    Raises
    ------
    PluginError
        Its module fails to import, or it is not a :class:`Stage` named ``name`` whose sections
        are sections of :class:`~skymorph.config.Config`.
    """
    where = f"plugin stage {name!r} of {dist} ({target})"
    module, _, attribute = target.partition(":")
    try:
        stage = getattr(importlib.import_module(module), attribute)
    except (Exception, SystemExit) as exc:
        raise PluginError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if not isinstance(stage, Stage):
        raise PluginError(f"{where} is a {type(stage).__name__}, not a skymorph.stages.Stage")
    if stage.name != name:
        raise PluginError(f"{where} is named {stage.name!r}; the entry point and Stage.name must agree")
    unknown = [s for s in stage.sections if s not in _SECTIONS]
    if unknown:
        raise PluginError(f"{where} reads unknown config section(s) {', '.join(unknown)}; a stage of "
                          f"another package reads existing ones: {', '.join(_SECTIONS)}")
    return stage


def _usable(name: str) -> Stage | None:
    """The declaration of stage ``name``, or ``None`` (with a warning) for a stage of another
    package that cannot be loaded: a broken plugin does not stop the stage that is running."""
    try:
        return get_stage(name)
    except PluginError as exc:
        log.warning("skymorph: %s (left out)", exc)
        return None


def image_source(config: Config, before: str) -> tuple[str, str]:
    """Array that stage ``before`` reads its images from, and the stage that writes it.

    The images flow stamps (ingest) -> denoised (denoise, when on) -> polar (polar,
    when on) -> encode.
    """
    chain = [("stamps", "ingest")]
    if config.denoise.enabled:
        chain.append(("denoised", "denoise"))
    if config.polar.enabled:
        chain.append(("polar", "polar"))
    if before == "polar":
        chain = [c for c in chain if c[1] != "polar"]
    return chain[-1]


@contextmanager
def _session(stage: Stage, config: Config, run: RunDir, fingerprint: str) -> Iterator[Any]:
    """The compute session of a chunked stage (``None`` for the others), with the
    result cache that lets an interrupted run resume."""
    if not stage.chunked:
        yield None
        return
    from ..core import compute
    from ..io.chunklog import ResultCache

    with compute.session(config.compute.scheduler, connect_timeout=config.compute.connect_timeout,
                         run_path=run.path) as session:
        session.cache = ResultCache(run.path, stage.name, fingerprint)
        yield session


def _upstream_closure(stage: Stage, config: Config) -> list[str]:
    """Every stage whose outputs ``stage`` reads, directly or through another."""
    seen: list[str] = []
    todo = list(stage.upstream(config))
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.append(name)
            todo += list(get_stage(name).upstream(config))
    return seen


def _check_upstream_settings(run: RunDir, config: Config, stage: Stage) -> None:
    """Refuse to run ``stage`` with settings of an upstream stage that differ from those
    its outputs were made with: the stage would compute from the old outputs and record
    the new settings in config.toml as if they had made them."""
    recorded = run.recorded_settings()
    for name in _upstream_closure(stage, config):
        used = recorded.get(name)
        if used is None:
            continue
        sections = [s for s in get_stage(name).sections if s in used]
        now = config.result_settings(*sections)
        for section in sections:
            for key, value in now[section].items():
                if key in used[section] and _plain(used[section][key]) != _plain(value):
                    raise RunDirError(
                        f"{section}.{key} is {value!r} in the settings, but the outputs of '{name}' in "
                        f"{run.path} were made with {used[section][key]!r} (stages/{name}.json); run "
                        f"{run.command_for(name)} with the new value first, or set it back "
                        f"(--set {section}.{key}=...)")


def _plain(value: Any) -> Any:
    """A setting as JSON gives it back (tuples as lists)."""
    return list(map(_plain, value)) if isinstance(value, list | tuple) else value


def execute(name: str, run_dir: str | os.PathLike | RunDir, config: Config | None = None, *,
            force: bool = False, progress: bool = True, options: dict[str, Any] | None = None,
            save_settings: bool = False, **settings: Any) -> RunDir:
    """Run stage ``name`` on a run directory, or reuse its output when it is current.

    Parameters
    ----------
    name : str
        A stage of :data:`STAGES`.
    run_dir : str, Path or RunDir
        The run directory (made by the stage when it ``creates_run``).
    config : Config, optional
        All settings.  By default the run's own ``config.toml`` (the defaults for a
        new run), exactly as the command line starts.
    force : bool
        Recompute even when inputs and settings are unchanged.
    progress : bool
        Show progress bars.
    options : dict, optional
        The stage's non-setting inputs (:attr:`Stage.arguments`).
    save_settings : bool
        Also record the execution-only settings of ``config`` (scheduler, workers,
        batch sizes, device, threads) in ``config.toml``, even when the stage is
        reused; by default they apply to this call only.
    **settings
        Overrides of the stage's own config section, e.g. ``k=10`` for ``cluster``.

    Returns
    -------
    RunDir

    Raises
    ------
    ConfigError
        A setting is unknown or not allowed (nothing was written).
    RunDirError
        The run directory is missing, busy with another writer, from another format
        version, or lacks an upstream stage's output.
    """
    stage = get_stage(name)
    if stage.creates_run:
        run = run_dir if isinstance(run_dir, RunDir) else RunDir.create(run_dir)
    else:
        run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    config = config if config is not None else run.config()
    if settings:
        if not stage.sections:
            raise ConfigError(f"stage {name} has no settings of its own; got {', '.join(settings)}")
        config = config.update({stage.sections[0]: settings})
    if stage.switch is not None:
        section, key = stage.switch.split(".")
        if not getattr(config.section(section), key):
            log.warning("%s: %s was false; running the stage by hand switches it on (recorded in "
                        "config.toml), so the stages after it read its output. Undo with "
                        "--set %s=false and re-run them.", name, stage.switch, stage.switch)
            config = config.update({section: {key: True}})
    config.check(*stage.sections)
    if stage.check is not None:
        stage.check(config)
    ctx = StageContext(run=run, config=config, options=dict(options or {}), progress=progress)
    with run.lock(f"skymorph {name}"):
        _check_upstream_settings(run, config, stage)
        extra = stage.extra(ctx) if stage.extra is not None else None
        fingerprint = run.fingerprint(name, config, stage.sections, upstream=stage.upstream(config),
                                      extra=extra)
        current = not (force or stage.always) and run.is_current(name, fingerprint)
        damaged = {path: run.damage(path) for path in stage.outputs} if current else {}
        for path, why in damaged.items():
            if why and why != "missing":
                log.warning("%s: %s is damaged (%s); computing it again", name, path, why)
        if current and not any(damaged.values()):
            log.info("%s: inputs and settings unchanged, reusing the output in %s", name, run.path)
            if save_settings:
                run.record_config(config, execution=True)
        else:
            ctx.fingerprint = fingerprint
            with _session(stage, config, run, fingerprint) as session:
                ctx.compute = session
                run.invalidate(name)
                run.mark_started(name, stage.outputs)
                run.record_config(config, execution=save_settings)
                summary = stage.compute(ctx) or {}
                if session is not None and session.cache.n_reused:
                    summary.setdefault("n_tasks_resumed", session.cache.n_reused)
            summary = check_written(name, summary)
            used = {s: config.to_dict()[s] for s in stage.sections}
            run.mark_done(name, fingerprint, **summary, settings_used=used,
                          made_from=_made_from(run, name, config))
            _after_recompute(run, name, config)
            if stage.chunked:
                from ..io.chunklog import clear_parts

                clear_parts(run.path, name)
        if stage.finish is not None:
            stage.finish(ctx)
    return run
