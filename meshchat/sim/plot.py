"""PNG plots of a run: the latency CDF and the delivery ratio over time.

Drawn from ``Results`` alone (its ``latency_cdf_ms`` and ``delivery_over_time``), so a results JSON
from an earlier run can be plotted again. matplotlib is an optional dependency (the ``sim`` extra):
without it, ``plot_results`` raises ``PlottingUnavailable`` instead of an ``ImportError`` from deep
inside. It uses the non-interactive Agg backend and never opens a window.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from meshchat.sim.errors import PlottingUnavailable
from meshchat.sim.results import Results

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["FIGURE_SIZE", "plot_results"]

#: Inches (width, height): two panels side by side, readable at 100 dpi on a laptop screen.
FIGURE_SIZE = (11.0, 4.2)
#: Dots per inch of the PNG.
DPI = 100


def plot_results(results: Results, path: Path) -> None:
    """Write ``path`` (PNG): latency CDF on the left, delivery ratio by publish time on the right."""
    try:
        import matplotlib  # noqa: PLC0415 (optional dependency: imported only when a plot is asked for)

        matplotlib.use("Agg")
        from matplotlib import pyplot  # noqa: PLC0415
    except ImportError as exc:
        raise PlottingUnavailable() from exc
    figure, (left, right) = pyplot.subplots(1, 2, figsize=FIGURE_SIZE)
    try:
        cdf = results.latency_cdf_ms
        if cdf:
            fractions = [i / (len(cdf) - 1) for i in range(len(cdf))]
            left.plot(cdf, fractions, color="tab:blue")
        left.set_xlabel("publish to delivery (ms, virtual)")
        left.set_ylabel("fraction of deliveries")
        left.set_title("latency CDF")
        left.set_ylim(0, 1.02)
        left.grid(alpha=0.3)
        buckets = [b for b in results.delivery_over_time if b["delivery_ratio"] is not None]
        right.plot([b["t"] for b in buckets], [b["delivery_ratio"] for b in buckets], color="tab:green")
        _shade_partition(right, results.parameters)
        right.set_xlabel("publish time (s after the first publish)")
        right.set_ylabel("delivery ratio")
        right.set_title("delivery over time")
        right.set_ylim(-0.02, 1.02)
        right.grid(alpha=0.3)
        ratio = "n/a" if results.delivery_ratio is None else f"{results.delivery_ratio:.4f}"
        figure.suptitle(
            f"meshchat sim: {results.nodes} nodes, {results.messages} messages, seed {results.seed}, "
            f"delivery {ratio}, {results.validation} validation"
        )
        figure.tight_layout()
        figure.savefig(path, dpi=DPI)
    finally:
        pyplot.close(figure)


def _shade_partition(axes: Axes, parameters: Mapping[str, object]) -> None:
    partition = parameters.get("partition")
    warmup = parameters.get("warmup")
    if not isinstance(partition, dict) or not isinstance(warmup, int | float):
        return
    at, heal = partition.get("at"), partition.get("heal")
    if not isinstance(at, int | float):
        return
    end = heal if isinstance(heal, int | float) else at + 1e9
    axes.axvspan(at - warmup, end - warmup, color="tab:red", alpha=0.12, label="partition")
    axes.legend(loc="lower left")
