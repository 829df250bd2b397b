"""Run reports: the metrics JSON and the learning-curve plot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from keras_vit.training.io import atomic_path, write_json

__all__ = ["plot_learning_curves", "write_json"]


def plot_learning_curves(history: Mapping[str, Sequence[float]], path: str, title: str = "") -> None:
    """Plots loss and accuracy per epoch (training and validation) to a PNG, atomically.

    Args:
        history: `keras.callbacks.History.history`-like {metric: per-epoch values}.
        path: target `.png`.
        title: figure title.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("Learning-curve plots need matplotlib: pip install 'keras-vit[plot]'.") from None
    panels = [name for name in ("loss", "accuracy") if name in history]
    if not panels:
        raise ValueError(f"The history has neither 'loss' nor 'accuracy'. Received keys: {sorted(history)}")
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for axis, name in zip(axes[0], panels):
        for key, label in ((name, "train"), (f"val_{name}", "held-out")):
            values = history.get(key)
            if values:
                axis.plot(range(1, len(values) + 1), values, label=label, marker="." if len(values) < 30 else None)
        axis.set_xlabel("epoch")
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110)
    plt.close(figure)
