"""Training curves of the networks a stage trains on the run's own images: the adapted
encoder's loss per optimiser step (``encode``) and the CAE's loss per epoch (``denoise``).

Plain losses in, PNG (and CSV) files out; the stages choose where they go in the run directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_training_curve", "write_training_curve", "plot_cae_history"]


def _pyplot() -> Any:
    # Agg: the stages draw on machines without a display (batch jobs, Dask workers)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curve(losses: Any, path: str | os.PathLike, note: str = "") -> Path:
    """Plot the adapted encoder's loss per step and its running mean (PNG); return the path.

    Parameters
    ----------
    losses : sequence of float
        The loss of each optimiser step (one batch each).
    path : str or Path
        The PNG to write.
    note : str
        Text written in the corner (the convergence note).

    Returns
    -------
    Path
        ``path``.

    See Also
    --------
    skymorph.core.adapted.convergence : the note.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "curve.png"
    >>> plot_training_curve([1.0, 0.5, 0.4, 0.35], out).exists()
    True
    """
    plt = _pyplot()
    values = np.asarray(losses, dtype=np.float64)
    steps = np.arange(1, values.size + 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=120)
    ax.plot(steps, values, color="C0", alpha=0.35, lw=0.8, label="loss per step (one batch)")
    window = max(1, values.size // 20)
    if values.size >= 2 * window > 1:
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color="C0", lw=2, label=f"running mean of {window} steps")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("training loss")
    ax.set_title("Adapted encoder: training curve", fontsize=10)
    if note:
        ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=7, va="bottom", wrap=True)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_training_curve(folder: str | os.PathLike, losses: Any, note: str = "") -> Path:
    """Write the adapted encoder's loss per step as ``training_curve.csv`` (columns ``step``,
    ``loss``) and its plot as ``training_curve.png`` in ``folder``; return the PNG's path.

    Parameters
    ----------
    folder : str or Path
        An existing folder (``RUN_DIR/adapted``).
    losses : sequence of float
        The loss of each optimiser step.
    note : str
        The convergence note written on the plot.

    Returns
    -------
    Path
        ``folder / "training_curve.png"``.

    See Also
    --------
    plot_training_curve : the plot alone.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_training_curve(folder, [1.0, 0.5, 0.4]).name
    'training_curve.png'
    >>> (folder / "training_curve.csv").read_text().splitlines()[:2]
    ['step,loss', '1,1.0']
    """
    import pandas as pd

    folder = Path(folder)
    pd.DataFrame({"step": np.arange(1, len(losses) + 1), "loss": losses}).to_csv(
        folder / "training_curve.csv", index=False)
    return plot_training_curve(losses, folder / "training_curve.png", note=note)


def plot_cae_history(history: dict[str, Any], path: str | os.PathLike) -> Path:
    """Plot the CAE's training and validation loss per epoch, and its best epoch (PNG).

    Parameters
    ----------
    history : dict
        :func:`skymorph.core.cae.train_cae`'s history: ``train_loss``, ``val_loss`` (drawn
        when ``has_validation``) and ``best_epoch``.
    path : str or Path
        The PNG to write.

    Returns
    -------
    Path
        ``path``.

    See Also
    --------
    skymorph.core.cae.fit_cae : makes the history.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "loss.png"
    >>> history = {"train_loss": [0.3, 0.2], "val_loss": [0.3, 0.25], "best_epoch": 2,
    ...            "has_validation": True}
    >>> plot_cae_history(history, out).exists()
    True
    """
    plt = _pyplot()
    epochs = np.arange(1, len(history["train_loss"]) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(epochs, history["train_loss"], "o-", ms=3, label="training")
    if history.get("has_validation"):
        ax.plot(epochs, history["val_loss"], "s-", ms=3, label="validation (held out)")
    ax.axvline(history["best_epoch"], color="0.5", ls=":", label=f"best epoch {history['best_epoch']}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (normalised units)")
    ax.set_yscale("log")
    ax.set_title("CAE loss", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
