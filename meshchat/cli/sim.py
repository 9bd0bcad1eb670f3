"""``meshchat sim``: run the deterministic network simulator (``meshchat.sim``) and report what it
measured, as a table, a results JSON and a PNG plot. ``--scenario NAME`` runs one named removal or
censorship experiment instead (``meshchat.sim.experiments``; ``--scenario list`` names them), with
its defence on and off.

The simulator (and matplotlib, for ``--plot``) is imported only when the command runs. Output paths
are checked before the simulation starts: a run of minutes must not end in "cannot write".
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meshchat.cli.common import CommandError, UsageError, stderr_console, stdout_console, terminal_markup
from meshchat.i18n import _

if TYPE_CHECKING:
    from rich.table import Table

    from meshchat.sim import Results
    from meshchat.sim.experiments_base import ExperimentReport

__all__ = ["check_output_path", "sim_command"]


def check_output_path(path: Path, option: str) -> None:
    """Raise ``UsageError`` unless ``path`` can be written as a file: its folder exists and may be
    written to, and it is not itself a folder (nor an existing file that may not be written)."""
    shown = str(path)
    folder = path.parent
    if path.is_dir():
        raise UsageError(
            _("{option} {shown} is a folder; give a file name").format(option=option, shown=shown)
        )
    if not folder.is_dir():
        why = _("is not a folder") if folder.exists() else _("does not exist")
        raise UsageError(
            _("{option} {shown}: the folder {folder} {why}").format(
                option=option, shown=shown, folder=folder, why=why
            )
        )
    if path.exists():
        if not os.access(path, os.W_OK):
            raise UsageError(
                _("{option} {shown} exists and may not be written").format(option=option, shown=shown)
            )
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(
            _("{option} {shown}: the folder {folder} may not be written").format(
                option=option, shown=shown, folder=folder
            )
        )


def sim_command(
    *,
    nodes: Annotated[int, typer.Option(help=_("Honest nodes."))] = 100,
    degree: Annotated[int, typer.Option(help=_("Connections per node at the start."))] = 6,
    messages: Annotated[int, typer.Option(help=_("Messages published by random honest nodes."))] = 100,
    rate: Annotated[float, typer.Option(help=_("Messages per second (virtual), after the warm-up."))] = 10.0,
    latency: Annotated[
        str, typer.Option(help=_("One-way link delay: 80ms, 50-150ms or lognormal:80ms:0.5."))
    ] = "50-150ms",
    jitter: Annotated[
        float, typer.Option(help=_("Extra random delay per packet, up to this many ms."))
    ] = 0.0,
    loss: Annotated[float, typer.Option(help=_("Probability that a link loses an RPC."))] = 0.0,
    bandwidth: Annotated[
        float | None,
        typer.Option(help=_("Uplink per node, bytes per second (default: unlimited)."), show_default=False),
    ] = None,
    topology: Annotated[
        str, typer.Option(help=_("random-regular, small-world or clusters."), metavar="KIND")
    ] = "random-regular",
    seed: Annotated[int, typer.Option(help=_("Seed of every random choice; same seed, same results."))] = 0,
    workers: Annotated[
        int,
        typer.Option(help=_("Processes sharing the nodes (one per core; results depend on the count too).")),
    ] = 1,
    churn: Annotated[float, typer.Option(help=_("Fraction of nodes that leave once and come back."))] = 0.0,
    partition: Annotated[
        str | None,
        typer.Option(
            metavar="AT:HEAL",
            help=_("Split the network in two from AT to HEAL s (AT: never heals)."),
            show_default=False,
        ),
    ] = None,
    sybils: Annotated[int, typer.Option(help=_("Sybils that connect en masse and never forward."))] = 0,
    eclipse: Annotated[int, typer.Option(help=_("Sybils that all connect to one victim."))] = 0,
    flooders: Annotated[int, typer.Option(help=_("Attackers flooding invalid messages."))] = 0,
    spammers: Annotated[int, typer.Option(help=_("Attackers publishing valid junk."))] = 0,
    fast_path: Annotated[
        bool,
        typer.Option(
            "--fast-path", help=_("Check size and version byte only, instead of decoding envelopes.")
        ),
    ] = False,
    no_scoring: Annotated[bool, typer.Option("--no-scoring", help=_("Turn peer scoring off."))] = False,
    no_idontwant: Annotated[bool, typer.Option("--no-idontwant", help=_("Never send IDONTWANT."))] = False,
    json_path: Annotated[
        str | None,
        typer.Option(
            "--json",
            metavar="FILE",
            help=_("Write the results JSON to FILE (- for stdout)."),
            show_default=False,
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", metavar="FILE.png", help=_("Draw the latency CDF and delivery over time.")),
    ] = None,
    scenario_name: Annotated[
        str | None,
        typer.Option(
            "--scenario",
            metavar="NAME",
            help=_("Run a named experiment with its defence on and off (list: --scenario list)."),
            show_default=False,
        ),
    ] = None,
    scale: Annotated[
        float, typer.Option(help=_("Shrink the experiment's network and workload (1.0: published figures)."))
    ] = 1.0,
) -> None:
    """Simulate a gossip network of real routers on a virtual clock and report delivery and latency."""
    if scenario_name is not None:
        _experiment(scenario_name, scale=scale, seed=seed, json_path=json_path)
        return
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise UsageError(
                _("--plot saves a PNG image; give a file name ending in .png, not {name!r}").format(
                    name=plot.name
                )
            )
        check_output_path(plot, "--plot")
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError(_("--plot needs matplotlib: pip install 'meshchat[sim]'"))
    if json_path not in (None, "-"):
        check_output_path(Path(json_path), "--json")
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from meshchat.gossip import GossipConfig, ScoreParams  # noqa: PLC0415
    from meshchat.sim import Scenario, TopologyKind, parse_latency, parse_partition  # noqa: PLC0415
    from meshchat.sim import run as run_simulation  # noqa: PLC0415

    try:
        kind = TopologyKind(topology)
    except ValueError:
        kinds = ", ".join(k.value for k in TopologyKind)
        raise CommandError(
            _("--topology must be one of {kinds}, not {topology!r}").format(kinds=kinds, topology=topology)
        ) from None
    scenario = Scenario(
        seed=seed,
        workers=workers,
        nodes=nodes,
        degree=degree,
        topology=kind,
        latency=parse_latency(latency),
        jitter=jitter / 1000,
        loss=loss,
        bandwidth=bandwidth,
        messages=messages,
        rate=rate,
        gossip=GossipConfig(idontwant=not no_idontwant),
        score_params=None if no_scoring else ScoreParams(),
        fast_path=fast_path,
        partition=None if partition is None else parse_partition(partition),
        churn=churn,
        sybils=sybils,
        eclipse=eclipse,
        flooders=flooders,
        spammers=spammers,
    )
    err = stderr_console()
    with Progress(
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% of {task.fields[virtual]:.0f} virtual s"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("sim", total=1.0, virtual=scenario.duration)
        results = run_simulation(scenario, progress=lambda done: bar.update(task, completed=done))
    text = results.to_json(indent=2)
    if json_path == "-":
        typer.echo(text)
    elif json_path is not None:
        try:
            Path(json_path).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:  # checked before the run; the disk can still fill up
            raise CommandError(
                _("cannot write {json_path}: {exc}").format(json_path=json_path, exc=exc.strerror or exc)
            ) from exc
    if plot is not None:
        from meshchat.sim.plot import plot_results  # noqa: PLC0415

        try:
            plot_results(results, plot)
        except OSError as exc:
            raise CommandError(
                _("cannot write {plot}: {exc}").format(plot=plot, exc=exc.strerror or exc)
            ) from exc
    # With --json - stdout holds the JSON alone, so the table goes to stderr.
    (err if json_path == "-" else stdout_console()).print(_sim_table(results, json_path=json_path, plot=plot))


def _experiment(name: str, *, scale: float, seed: int, json_path: str | None) -> None:
    """Run (or, for ``list``, list) the named experiments of ``meshchat.sim.experiments``."""
    from meshchat.sim.experiments import EXPERIMENTS  # noqa: PLC0415

    out = stdout_console()
    if name == "list":
        for experiment in EXPERIMENTS.values():
            out.print(f"{experiment.name:20} {experiment.description}", markup=False, highlight=False)
        return
    chosen = EXPERIMENTS.get(name)
    if chosen is None:
        raise UsageError(_("unknown scenario {name!r}; --scenario list names them").format(name=name))
    if not 0.0 < scale <= 1.0:
        raise UsageError(_("--scale must be above 0 and at most 1, not {scale}").format(scale=scale))
    if json_path not in (None, "-"):
        check_output_path(Path(json_path), "--json")
    err = stderr_console()
    with err.status(name):
        report = chosen.run(seed, scale)
    text = json.dumps(report.to_dict(), indent=2)
    if json_path == "-":
        typer.echo(text)
    elif json_path is not None:
        try:
            Path(json_path).write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            raise CommandError(
                _("cannot write {json_path}: {exc}").format(json_path=json_path, exc=exc.strerror or exc)
            ) from exc
    console = err if json_path == "-" else out
    console.print(_experiment_table(report))
    for note in report.notes:
        console.print(f"- {note}", markup=False, highlight=False)


def _experiment_table(report: ExperimentReport) -> Table:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=report.name, caption=report.summary, title_justify="left", caption_justify="left")
    for column in ("", _("delivery"), "p50 ms", "p99 ms"):
        table.add_column(column)
    for arm in report.arms:
        table.add_row(
            arm.label,
            f"{100 * arm.delivery:.2f} % ({arm.delivered:,}/{arm.expected:,})",
            _("n/a") if arm.p50_s is None else f"{1000 * arm.p50_s:.0f}",
            _("n/a") if arm.p99_s is None else f"{1000 * arm.p99_s:.0f}",
        )
    return table


def _sim_table(results: Results, *, json_path: str | None, plot: Path | None) -> Table:
    from rich.table import Table  # noqa: PLC0415

    latency = results.latency_ms
    table = Table(title=_("meshchat sim"), title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    workers = results.parameters.get("workers", 1)
    table.add_row(
        _("network"),
        f"{results.nodes:,} nodes, seed {results.seed}, {results.validation} validation"
        + (f", {workers} workers" if workers != 1 else ""),
    )
    ratio = _("n/a") if results.delivery_ratio is None else f"{results.delivery_ratio:.4f}"
    table.add_row(
        _("delivery"),
        _("{ratio} ({deliveries:,} of {expected_deliveries:,} expected, {messages:,} messages)").format(
            ratio=ratio,
            deliveries=results.deliveries,
            expected_deliveries=results.expected_deliveries,
            messages=results.messages,
        ),
    )
    if latency["p50"] is not None:
        table.add_row(
            _("latency ms"),
            _("mean {mean:.0f}  p50 {p50:.0f}  p90 {p90:.0f}  p99 {p99:.0f}  max {max:.0f}").format(
                mean=latency["mean"],
                p50=latency["p50"],
                p90=latency["p90"],
                p99=latency["p99"],
                max=latency["max"],
            ),
        )
    duplicates = results.duplicates_per_message
    table.add_row(
        _("duplicates"),
        _("n/a")
        if duplicates is None
        else _("{duplicates:.2f} extra copies per node").format(duplicates=duplicates),
    )
    sent = results.bytes_per_node
    if sent["mean"] is not None and sent["max"] is not None:
        table.add_row(
            _("bytes per node"),
            _("mean {mean:,.0f}  max {max:,.0f}").format(mean=sent["mean"], max=sent["max"]),
        )
    for layer in ("network", "router"):
        counts = {k: v for k, v in results.drops[layer].items() if v}
        table.add_row(
            _("{layer} drops").format(layer=layer),
            ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or _("none"),
        )
    attack = {k: v for k, v in results.attack.items() if v}
    if attack:
        table.add_row(_("attack"), ", ".join(f"{k} {v}" for k, v in sorted(attack.items())))
    speed = results.virtual_seconds / results.wall_seconds if results.wall_seconds else math.inf
    table.add_row(
        _("time"),
        _(
            "{virtual_seconds:.1f} s virtual in {wall_seconds:.1f} s ({speed:.1f}x real time), "
            "{events:,} events"
        ).format(
            virtual_seconds=results.virtual_seconds,
            wall_seconds=results.wall_seconds,
            speed=speed,
            events=results.events,
        ),
    )
    if json_path not in (None, "-"):
        table.add_row(_("results"), terminal_markup(str(json_path)))
    if plot is not None:
        table.add_row(_("plot"), terminal_markup(str(plot)))
    return table
