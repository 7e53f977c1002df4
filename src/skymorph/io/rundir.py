"""The run directory: where every stage reads its inputs and writes its outputs.

Layout (paths relative to ``RUN_DIR``)::

    skymorph.json        format version and the skymorph version that created it
    config.toml          every setting used by the last stage that ran
    stages/<stage>.json  fingerprint of each finished stage (inputs + settings) and
                         ``settings_used``: the settings its outputs were made with
                         (config.toml is rebuilt from them when missing or empty)
    stages/<stage>.unfinished  a stage that started writing and has not finished
    stamps.zarr          N x S x S float32 stamps                    (ingest)
    sources.parquet      one row per stamp, same order               (ingest)
    rejects.csv          id, origin, stage, reason of unusable inputs (any stage)
    denoised.zarr        N x S x S float32                            (denoise)
    polar.zarr           N x rows x cols float32                      (polar)
    features.zarr        N x D float32                                (encode)
    embedding.zarr       N x d float32                                (reduce)
    catalog.parquet      one row per processed galaxy                 (cluster, ...)
    catalog.fits         the same table as FITS (HDU 'CATALOG'; io/catalog.py)
    psf.zarr             N x P x P normalised PSF per stamp            (ingest, optional)
    rms.zarr             N x S x S 1-sigma error per pixel             (ingest, optional)
    measurements.parquet every statmorph scalar, Psi, G2              (measure)

Every table and array carries its provenance (skymorph version, date, settings,
stages' fingerprints): the FITS primary header, the Parquet schema metadata and
the Zarr attributes (key ``skymorph``); catalog columns carry units and
descriptions.

Array stores are Zarr arrays chunked along the galaxy axis, so every stage can
stream them chunk by chunk and Dask can map over them with ``dask.array.from_zarr``.
They are not compressed: noisy float pixels barely compress, and zstd cost a
sizeable share of each stage's time.  ``stages/<stage>.partial.jsonl`` records the
finished chunks of an interrupted polar, denoise or encode so that it can resume.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

from .._version import __version__
from ..config import Config, ConfigError, load_config
from .arrays import _KEEP_EMPTY_CHUNKS, ArrayWriter, OptionalArrayWriter, iter_chunks
from .csvfile import escape_cell, read_csv, write_csv
from .runfiles import (
    RunDirError,
    _atomic_write,
    _command,
    _is_blank_toml,
    _read_json,
    _read_parquet,
    printable,
)

__all__ = ["RunDir", "RunDirError", "printable", "ArrayWriter", "OptionalArrayWriter", "REJECT_COLUMNS",
           "iter_chunks"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
REJECT_COLUMNS = ["id", "origin", "stage", "reason"]
ARRAY_ORDER = ("stamps", "rms", "psf", "denoised", "polar", "features", "embedding", "embedding_2d")
"""The arrays of a run in the order the pipeline writes them (``skymorph info`` lists them so)."""


class RunDir:
    """Handle on one run directory.

    Parameters
    ----------
    path : str or Path
        The run directory.
    create : bool
        Create it (and its version file) when it does not exist yet.
    """

    def __init__(self, path: str | Path, create: bool = False) -> None:
        self.path = Path(path)
        meta = self.path / "skymorph.json"
        if not meta.exists():
            if not create:
                if self.path.exists():
                    raise RunDirError(
                        f"{self.path} is not a skymorph run directory (no skymorph.json); "
                        "create one with `skymorph ingest INPUT... --out RUN_DIR`"
                    )
                raise RunDirError(
                    f"run directory {self.path} does not exist; "
                    "create it with `skymorph ingest INPUT... --out RUN_DIR`"
                )
            self._make(meta)
        info = _read_json(meta)
        found = info.get("format_version")
        if found != FORMAT_VERSION:
            raise RunDirError(
                f"{self.path} was written by skymorph {info.get('created_by', '?')} in run "
                f"directory format {found}; this skymorph ({__version__}) reads format "
                f"{FORMAT_VERSION}. Re-run the pipeline into a new directory "
                "(`skymorph run INPUT... --out NEW_RUN_DIR`)."
            )

    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        """Open the run directory ``path``, making it when it does not exist.

        Raises
        ------
        RunDirError
            If ``path`` is a file, or a non-empty directory that is not a run
            directory (skymorph never writes among a user's own files), or cannot
            be created.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RunDirError(f"--out {path} is an existing file; give a directory for the run")
        if path.is_dir() and not (path / "skymorph.json").exists() and any(path.iterdir()):
            raise RunDirError(f"--out {path} is a non-empty directory that is not a skymorph run "
                              "directory; give a new or empty directory")
        return cls(path, create=True)

    def _make(self, meta: Path) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            _atomic_write(meta, json.dumps({"format_version": FORMAT_VERSION, "created_by": __version__},
                                           indent=2))
        except OSError as exc:
            raise RunDirError(f"cannot create the run directory {self.path}: {exc.strerror}; "
                              "choose a writable place for --out") from None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def summary(self, stage_order: Sequence[str] = ()) -> str:
        """A few lines on what the run holds: stages finished, arrays, catalog, rejects.

        Stages are listed in ``stage_order`` (the pipeline's, from the stage registry),
        any others after them in the order they finished; arrays in the order of the
        pipeline that writes them.
        """
        lines = [f"run directory {self.path}"]
        infos = {p.stem: self.stage_info(p.stem) or {} for p in self._stage_records()}
        rank = {name: i for i, name in enumerate(stage_order)}
        for name in sorted(infos, key=lambda n: (rank.get(n, len(rank)), str(infos[n].get("finished")), n)):
            stale = self.stale(name)
            lines.append(f"  {name:<9} finished {infos[name].get('finished', '?')}"
                         + (f"  STALE: made from an earlier {', '.join(stale)}; re-run it" if stale else ""))
        partial: dict[str, str] = {}
        for stage, info in self.unfinished().items():
            lines.append(f"  {stage:<9} UNFINISHED: started {info.get('started', '?')} and stopped before "
                         f"the end; its outputs are partial, run `{_command(stage, self.path)}` again")
            partial.update(dict.fromkeys(info.get("outputs", []), stage))
        arrays = {name: i for i, name in enumerate(ARRAY_ORDER)}
        for path in sorted(self.path.glob("*.zarr"), key=lambda p: (arrays.get(p.stem, len(arrays)), p.stem)):
            try:
                array = self.open_array(path.stem, check=False)
            except RunDirError as exc:
                lines.append(f"  {path.stem:<13} DAMAGED: {exc}")
                continue
            note = f" (partial: {partial[path.name]} did not finish)" if path.name in partial else ""
            if not note:
                try:
                    self._check_chunks(path.stem, array)
                except RunDirError as exc:
                    note = f" DAMAGED: {exc}"
            lines.append(f"  {path.stem:<13} {' x '.join(map(str, array.shape))} {array.dtype}{note}")
        if (self.path / "catalog.parquet").exists():
            from .catalog import describe_catalog

            lines += describe_catalog(self.path)
        lines.append(f"  rejects       {len(self.rejects())} inputs")
        return "\n".join(lines)

    def exists(self, relative: str) -> bool:
        """Whether ``relative`` (a file, or an array as ``name.zarr``) exists in the run."""
        if relative.endswith(".zarr"):
            return self.has_array(relative[:-5])
        return (self.path / relative).exists()

    @contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the run's writer lock while the block runs.

        One process at a time may write a run directory; readers (``inspect serve``,
        ``evaluate``) do not take the lock.  The lock is an OS file lock
        (``filelock``), released even when the process is killed.

        Raises
        ------
        RunDirError
            If another process holds it; the message names its pid and command.
        """
        from filelock import FileLock, Timeout

        info = self.path / ".lock.json"
        lock = FileLock(self.path / ".lock", timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = _read_json(info, missing_ok=True)
            raise RunDirError(
                f"run directory {self.path} is busy (pid {holder.get('pid', '?')}, command "
                f"{holder.get('command', '?')!r}); wait for it to finish or use another --out"
            ) from None
        try:
            _atomic_write(info, json.dumps({"pid": os.getpid(), "command": command}))
            yield
        finally:
            info.unlink(missing_ok=True)
            lock.release()

    def config(self) -> Config:
        """The settings recorded in ``config.toml`` (the defaults when there is none).

        Raises
        ------
        ConfigError
            If the file is not valid TOML or holds an unknown or wrong-typed setting;
            the message names the file.
        """
        path = self.path / "config.toml"
        if not path.exists() or _is_blank_toml(path):
            return self._config_from_records("missing" if not path.exists() else "empty")
        try:
            return load_config(path, keep_unknown=True)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc} (fix the file or remove the line)") from None
        except (UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"{path} cannot be read as settings ({exc}); restore it, or delete it to "
                              "rebuild it from the stage records in stages/") from None

    def _stage_records(self) -> list[Path]:
        """``stages/<stage>.json`` of each finished stage (not the resume records such as
        ``encode.partial.jsonl``)."""
        return sorted(p for p in (self.path / "stages").glob("*.json") if "." not in p.stem)

    def recorded_settings(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{stage: {section: {key: value}}}``: the settings each finished stage's outputs
        were made with (``settings_used`` of ``stages/<stage>.json``; stages recorded by an
        older skymorph are left out)."""
        out = {}
        records = [self.stage_info(p.stem) or {} for p in self._stage_records()]
        for info in sorted(records, key=lambda i: str(i.get("finished", ""))):
            used = info.get("settings_used")
            if isinstance(used, dict) and isinstance(info.get("stage"), str):
                out[info["stage"]] = used
        return out

    def _config_from_records(self, state: str) -> Config:
        """The settings rebuilt from the stage records, for a ``config.toml`` that is missing
        or empty (the defaults for a run where no stage has finished)."""
        stages = sorted(p.stem for p in self._stage_records())
        if not stages:
            return Config()
        recorded = self.recorded_settings()
        lacking = [s for s in stages if s not in recorded]
        if lacking:
            raise ConfigError(
                f"{self.path / 'config.toml'} is {state} and stages/{lacking[0]}.json does not record the "
                "settings its outputs were made with (an older skymorph wrote it); restore config.toml, "
                "or re-run the pipeline into a new run directory")
        values: dict[str, dict[str, Any]] = {}
        for sections in recorded.values():
            for section, entries in sections.items():
                values.setdefault(section, {}).update(entries)
        log.warning("%s is %s: the settings were rebuilt from the records of %s in stages/",
                    self.path / "config.toml", state, ", ".join(recorded))
        try:
            # execution-only settings (scheduler, workers, ...) applied to the command that ran
            return Config().update(values, keep_unknown=True).with_execution_settings(Config())
        except ConfigError as exc:
            raise ConfigError(f"the stage records in {self.path / 'stages'} hold a setting this skymorph "
                              f"does not know ({exc}); restore config.toml") from None

    # -- settings and staleness ------------------------------------------------

    def record_config(self, config: Config, *, execution: bool = False) -> None:
        """Write every setting to ``config.toml``.

        Execution-only settings (scheduler, workers, batch sizes, device, threads; see
        :func:`skymorph.config.setting`) keep the values already recorded (the defaults
        in a new run), so a value given for one command does not follow the later ones;
        ``execution=True`` records ``config``'s own values of them too.
        """
        if not execution:
            config = config.with_execution_settings(self.config())
        _atomic_write(self.path / "config.toml",
                      f"# settings used by skymorph {__version__}\n" + config.to_toml())

    def stage_info(self, stage: str) -> dict[str, Any] | None:
        """What a finished stage recorded, or ``None`` when it has not run."""
        path = self.path / "stages" / f"{stage}.json"
        return _read_json(path) if path.exists() else None

    def fingerprint(self, stage: str, config: Config, sections: Iterable[str],
                    upstream: Iterable[str] = (), extra: Any = None) -> str:
        """Fingerprint of a stage: its settings, its inputs' fingerprints and ``extra``.

        Raises
        ------
        RunDirError
            If an upstream stage has not run.
        """
        parts = [config.fingerprint(*sections), repr(extra)]
        for name in upstream:
            info = self.stage_info(name)
            if info is None:
                state = ("started but did not finish (its outputs are partial)"
                         if name in self.unfinished() else "has not run")
                raise RunDirError(
                    f"stage '{stage}' needs the output of '{name}', which {state} in "
                    f"{self.path}; run `{_command(name, self.path)}` first"
                )
            fingerprint = info.get("fingerprint")
            if not isinstance(fingerprint, str):
                raise RunDirError(
                    f"{self.path / 'stages' / (name + '.json')} is damaged (its fingerprint is "
                    f"{fingerprint!r}, not text); run {self.command_for(name)} again with --force")
            parts.append(fingerprint)
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def is_current(self, stage: str, fingerprint: str) -> bool:
        """True when ``stage`` finished with exactly this fingerprint."""
        info = self.stage_info(stage)
        return info is not None and info.get("fingerprint") == fingerprint

    def mark_started(self, stage: str, outputs: Iterable[str] = ()) -> None:
        """Record that ``stage`` is writing ``outputs``; :meth:`mark_done` clears it, so a
        stage that stops part-way leaves its run marked unfinished (see :meth:`unfinished`)."""
        (self.path / "stages").mkdir(exist_ok=True)
        _atomic_write(self.path / "stages" / f"{stage}.unfinished",
                      json.dumps({"stage": stage, "started": datetime.now(UTC).isoformat(timespec="seconds"),
                                  "outputs": list(outputs)}))

    def command_for(self, stage: str) -> str:
        """The command that (re)runs ``stage`` here, saying so when it started but did not finish."""
        state = " again (it started but did not finish)" if stage in self.unfinished() else ""
        return f"`{_command(stage, self.path)}`{state}"

    def unfinished(self) -> dict[str, dict[str, Any]]:
        """Stages that started writing their outputs and stopped before the end."""
        out = {}
        for path in sorted((self.path / "stages").glob("*.unfinished")):
            try:
                out[path.stem] = json.loads(path.read_text())
            except (OSError, ValueError):
                out[path.stem] = {}
        return out

    def mark_done(self, stage: str, fingerprint: str, **summary: Any) -> None:
        """Record that ``stage`` finished, with its fingerprint and a summary."""
        (self.path / "stages").mkdir(exist_ok=True)
        (self.path / "stages" / f"{stage}.unfinished").unlink(missing_ok=True)
        info = {
            "stage": stage,
            "fingerprint": fingerprint,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "skymorph_version": __version__,
            **summary,
        }
        _atomic_write(self.path / "stages" / f"{stage}.json", json.dumps(info, indent=2, default=str))

    def stale(self, stage: str) -> list[str]:
        """The stages that ``stage``'s outputs were made from and that have been recomputed
        (or forgotten) since: non-empty means its outputs are stale.  Empty for a stage that
        has not run, or that recorded nothing it was made from (runs of an older skymorph)."""
        info = self.stage_info(stage)
        if not info:
            return []
        changed = []
        for name, fingerprint in (info.get("made_from") or {}).items():
            current = self.stage_info(name)
            if current is None or current.get("fingerprint") != fingerprint:
                changed.append(name)
        return changed

    def invalidate(self, stage: str) -> None:
        """Forget that ``stage`` finished (before rewriting its outputs)."""
        (self.path / "stages" / f"{stage}.json").unlink(missing_ok=True)

    # -- arrays ------------------------------------------------------------------

    def array_path(self, name: str) -> Path:
        return self.path / f"{name}.zarr"

    def has_array(self, name: str) -> bool:
        return (self.array_path(name) / "zarr.json").exists()

    def open_array(self, name: str, check: bool = True) -> zarr.Array:
        """Open a stored array (read-only).

        Parameters
        ----------
        name : str
            Array name (``stamps``, ``features``...).
        check : bool
            Check that every chunk along the galaxy axis is on disk: a lost chunk
            would otherwise read as fill values.

        Raises
        ------
        RunDirError
            If the array has not been written, or a chunk is missing (the message
            names the stage to re-run with ``--force``).
        """
        if not self.has_array(name):
            raise RunDirError(f"{self.path} has no '{name}' array yet")
        try:
            array = zarr.open_array(store=str(self.array_path(name)), mode="r")
        except (ValueError, OSError, KeyError, TypeError) as exc:
            raise RunDirError(f"the '{name}' array of {self.path} cannot be read ({exc}); "
                              "re-run the stage that writes it with --force") from None
        if check:
            self._check_chunks(name, array)
        return array

    def _check_chunks(self, name: str, array: zarr.Array) -> None:
        n_chunks = -(-array.shape[0] // array.chunks[0]) if array.shape[0] else 0
        root = self.array_path(name) / "c"
        present = {p.name for p in root.iterdir()} if root.is_dir() else set()
        missing = [i for i in range(n_chunks) if str(i) not in present]
        if missing:
            raise RunDirError(
                f"the '{name}' array of {self.path} has lost {len(missing)} of {n_chunks} chunks "
                f"(first: chunk {missing[0]}, galaxies {missing[0] * array.chunks[0]}...); re-run the "
                "stage that writes it with --force")
        if not getattr(array, "compressors", ()):  # uncompressed: every chunk file has one length
            expected = math.prod(array.chunks) * array.dtype.itemsize
            for i in range(n_chunks):
                chunk = root.joinpath(str(i), *["0"] * (array.ndim - 1))
                size = chunk.stat().st_size if chunk.is_file() else expected
                if size != expected:
                    raise RunDirError(
                        f"chunk {i} of the '{name}' array ({chunk}) holds {size} bytes, not {expected}: it "
                        "is truncated or damaged; re-run the stage that writes it with --force")
        n_sources = self._n_sources()
        if n_sources is not None and array.shape[0] != n_sources:
            raise RunDirError(
                f"the '{name}' array of {self.path} has {array.shape[0]} rows but sources.parquet "
                f"{n_sources} galaxies: {self.array_path(name) / 'zarr.json'} or sources.parquet is "
                "damaged; re-run the stage that writes the array with --force")

    def _n_sources(self) -> int | None:
        """Rows of ``sources.parquet`` from its footer (``None`` when there is none)."""
        path = self.path / "sources.parquet"
        if not path.exists():
            return None
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (OSError, ValueError) as exc:
            raise RunDirError(f"{path} is damaged ({exc}); re-run ingest (`skymorph ingest INPUT... "
                              f"--out {self.path} --force`)") from None

    def damage(self, relative: str) -> str | None:
        """Why an output (a file, or an array as ``name.zarr``) cannot be reused: missing,
        or an array with lost or truncated chunks or the wrong number of rows; ``None``
        when it is fine."""
        if not self.exists(relative):
            return "missing"
        if relative.endswith(".zarr"):
            try:
                self.open_array(relative[:-5])
            except RunDirError as exc:
                return str(exc)
        return None

    def create_array(self, name: str, shape: tuple[int, ...], chunk: int,
                     dtype: str = "float32", attributes: dict[str, Any] | None = None) -> zarr.Array:
        """Create (overwrite) an array chunked by ``chunk`` galaxies along axis 0.

        Its Zarr attributes hold the provenance (key ``skymorph``: version, date,
        settings, stages' fingerprints) and ``attributes`` (e.g. ``units``).
        """
        chunks = (max(1, min(chunk, max(shape[0], 1))), *shape[1:])
        return zarr.create_array(
            store=str(self.array_path(name)), shape=shape, chunks=chunks, dtype=dtype,
            fill_value=np.nan if np.dtype(dtype).kind == "f" else 0, overwrite=True,
            compressors=None, config=_KEEP_EMPTY_CHUNKS, attributes=self._attributes(attributes),
        )

    def writer(self, name: str, item_shape: tuple[int, ...], chunk: int,
               dtype: str = "float32", attributes: dict[str, Any] | None = None) -> ArrayWriter:
        """An :class:`ArrayWriter` that appends to a new array ``name`` (attributes
        as :meth:`create_array`)."""
        return ArrayWriter(self.array_path(name), item_shape, chunk, dtype,
                           attributes=self._attributes(attributes))

    def _attributes(self, attributes: dict[str, Any] | None) -> dict[str, Any]:
        from .catalog import PROVENANCE_KEY, provenance

        return {PROVENANCE_KEY: json.loads(json.dumps(provenance(self.path, inputs=False), default=str)),
                **(attributes or {})}

    # -- tables --------------------------------------------------------------------

    def sources(self) -> pd.DataFrame:
        """The ``sources`` table written by ingest, one row per stamp."""
        path = self.path / "sources.parquet"
        if not path.exists():
            raise RunDirError(
                f"{self.path} has no sources table; run `skymorph ingest INPUT... --out {self.path}`"
            )
        return _read_parquet(path, f"re-run ingest (`skymorph ingest INPUT... --out {self.path} --force`)")

    @property
    def rejects_path(self) -> Path:
        return self.path / "rejects.csv"

    def add_rejects(self, rows: Iterable[dict[str, Any]]) -> int:
        """Append reject rows (``id``, ``origin``, ``stage``, ``reason``); returns how many."""
        rows = list(rows)
        if not rows:
            return 0
        new = not self.rejects_path.exists()
        with self.rejects_path.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=REJECT_COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows({k: escape_cell(printable(row.get(k, ""))) for k in REJECT_COLUMNS}
                             for row in rows)
        return len(rows)

    def rejects(self, stage: str | None = None) -> pd.DataFrame:
        """Rejected inputs, optionally of one stage only."""
        if not self.rejects_path.exists():
            return pd.DataFrame(columns=REJECT_COLUMNS)
        try:
            table = read_csv(self.rejects_path, dtype=str, keep_default_na=False, encoding="utf-8")
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise RunDirError(f"{self.rejects_path} is damaged ({exc}); delete it and re-run ingest "
                              "(it lists the inputs that could not be used)") from None
        if list(table.columns) != REJECT_COLUMNS:
            raise RunDirError(f"{self.rejects_path} is damaged (its columns are not "
                              f"{', '.join(REJECT_COLUMNS)}); delete it and re-run ingest")
        return table if stage is None else table[table["stage"] == stage]

    def clear_rejects(self, stage: str) -> None:
        """Drop the reject rows of one stage (before that stage runs again);
        the file always exists afterwards, so an empty one means nothing was rejected."""
        table = self.rejects()
        write_csv(table[table["stage"] != stage], self.rejects_path, encoding="utf-8")

    def catalog(self) -> pd.DataFrame:
        """The morphology catalog (``catalog.parquet``)."""
        path = self.path / "catalog.parquet"
        if not path.exists():
            raise RunDirError(
                f"{self.path} has no catalog yet; run `skymorph cluster {self.path}` first"
            )
        return _read_parquet(path, f"re-run `skymorph cluster {self.path} --force` (and the stages after it)")

    def write_catalog(self, table: pd.DataFrame) -> pd.DataFrame:
        """Write the catalog as Parquet and FITS, with units, descriptions and
        provenance (:func:`skymorph.io.catalog.write_catalog`); returns it as written."""
        from .catalog import write_catalog

        return write_catalog(self.path, table)

    def update_catalog(self, columns: pd.DataFrame) -> pd.DataFrame:
        """Join ``columns`` (with an ``id`` column) onto the catalog, replacing
        columns of the same name, and write it back
        (:func:`skymorph.io.catalog.update_catalog`)."""
        if not (self.path / "catalog.parquet").exists():
            self.catalog()  # the error that names the stage to run
        from .catalog import update_catalog

        return update_catalog(self.path, columns)
