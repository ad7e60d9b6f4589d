"""Training curves as a PNG for the ZenML dashboard's artifact viewer (MLflow draws its own chart per metric).

One column of panels, each readable at the viewer's width: the training loss, then one panel per evaluation
protocol (``sampled99``, ``full``) with its validation metrics at 10 overlaid (HR@10, NDCG@10), and the epoch the
run kept (its best validation epoch) marked in every panel: what the per-metric MLflow charts do not show together.
"""

from __future__ import annotations

import io
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

#: Width of the figure in inches and height of one panel (at 110 dpi: about 770 px wide, 290 px a panel).
WIDTH, PANEL_HEIGHT = 7.0, 2.6


def metric_groups(history: list[dict]) -> dict[str, list[str]]:
    """The validation metrics at 10 of ``history`` grouped by protocol, in first-seen order:
    ``{"sampled99": ["valid_sampled99_hr_at_10", ...], "full": [...]}``."""
    groups: dict[str, list[str]] = {}
    for key in (history[0] if history else {}):
        m = re.fullmatch(r"valid_(full|sampled\d+)_\w+_at_10", key)
        if m:
            groups.setdefault(m.group(1), []).append(key)
    return groups


def training_curves(history: list[dict], *, title: str = "", best_epoch: int | None = None) -> "plt.Figure":
    """Loss, then one panel per protocol with its validation metrics at 10, per epoch; ``best_epoch`` (the epoch
    the run kept) is marked with a dashed line."""
    epochs = [h["epoch"] for h in history]
    groups = metric_groups(history)
    n = 1 + len(groups)
    fig, axes = plt.subplots(n, 1, figsize=(WIDTH, PANEL_HEIGHT * n), sharex=True, squeeze=False)
    axes = axes[:, 0]
    axes[0].plot(epochs, [h["loss"] for h in history], marker="o", color="tab:blue")
    axes[0].set(title="training loss", ylabel="loss")
    for ax, (protocol, keys) in zip(axes[1:], groups.items()):
        for key in keys:
            label = key[len(f"valid_{protocol}_"):].replace("_at_", "@").upper()
            ax.plot(epochs, [h.get(key) for h in history], marker="o", label=label)
        ax.set(title=f"validation, {protocol} protocol", ylabel="metric")
        ax.legend(loc="lower right", fontsize="small")
    for ax in axes:
        ax.grid(alpha=0.3)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
    axes[-1].set_xlabel("epoch" + (f" (dashed: epoch {best_epoch}, the one kept)" if best_epoch else ""))
    if len(epochs) <= 20:
        axes[-1].set_xticks(epochs)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
