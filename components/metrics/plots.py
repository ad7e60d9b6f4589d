"""Training curves as a PNG: where people would rather look than read."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def training_curves(history: list[dict], *, title: str = "") -> "plt.Figure":
    """Loss and every validation metric per epoch, one panel each (metric names carry their protocol)."""
    epochs = [h["epoch"] for h in history]
    metric_keys = [k for k in (history[0] if history else {}) if k.startswith("valid_") and "_at_10" in k]
    fig, axes = plt.subplots(1, 1 + len(metric_keys), figsize=(4.5 * (1 + len(metric_keys)), 3.4), squeeze=False)
    axes = axes[0]
    axes[0].plot(epochs, [h["loss"] for h in history], marker="o")
    axes[0].set(title="training loss", xlabel="epoch")
    for ax, key in zip(axes[1:], metric_keys):
        ax.plot(epochs, [h.get(key) for h in history], marker="o", color="tab:green")
        ax.set(title=key, xlabel="epoch")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
