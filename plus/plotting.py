"""The house figure style: one look for every figure in the book."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

PALETTE = "colorblind"


def use_house_style() -> None:
    """Seaborn's whitegrid with the colorblind palette and figure sizes that read well in the book."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    plt.rcParams.update({"figure.figsize": (7, 4), "figure.dpi": 110, "savefig.bbox": "tight"})


def save_figure(fig: plt.Figure, path: str | Path) -> Path:
    """Save ``fig`` as PNG beside the run's other artifacts (the notebook still shows it inline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def glue_figure(name: str, fig: plt.Figure, path: str | Path) -> None:
    """Save ``fig`` (`save_figure`) and hand it to the book under ``name``: a markdown cell's
    ``{glue:figure} name`` shows it there with a numbered caption. The figure is closed and nothing is returned,
    so the cell that made it shows nothing and the page shows the figure once, captioned."""
    from myst_nb import glue

    save_figure(fig, path)
    glue(name, fig, display=False)
    plt.close(fig)
