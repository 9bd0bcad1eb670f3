"""``meshchat sim``: run the deterministic network simulator (``meshchat.sim``) and report what it
measured, as a table, a results JSON and a PNG plot.

The simulator (and matplotlib, for ``--plot``) is imported only when the command runs. Output paths
are checked before the simulation starts: a run of minutes must not end in "cannot write".
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from meshchat.cli.common import CommandError, UsageError, stderr_console, stdout_console, terminal_markup

if TYPE_CHECKING:
    from rich.table import Table

    from meshchat.sim import Results

__all__ = ["check_output_path", "sim_command"]


def check_output_path(path: Path, option: str) -> None:
    """Raise ``UsageError`` unless ``path`` can be written as a file: its folder exists and may be
    written to, and it is not itself a folder (nor an existing file that may not be written)."""
    shown = str(path)
    folder = path.parent
    if path.is_dir():
        raise UsageError(f"{option} {shown} is a folder; give a file name")
    if not folder.is_dir():
        why = "is not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"{option} {shown}: the folder {folder} {why}")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise UsageError(f"{option} {shown} exists and may not be written")
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {shown}: the folder {folder} may not be written")


def sim_command(
    *,
    nodes: Annotated[int, typer.Option(help="Honest nodes.")] = 100,
    degree: Annotated[int, typer.Option(help="Connections per node at the start.")] = 6,
    messages: Annotated[int, typer.Option(help="Messages published by random honest nodes.")] = 100,
    rate: Annotated[float, typer.Option(help="Messages per second (virtual), after the warm-up.")] = 10.0,
    latency: Annotated[
        str, typer.Option(help="One-way link delay: 80ms, 50-150ms or lognormal:80ms:0.5.")
    ] = "50-150ms",
    jitter: Annotated[float, typer.Option(help="Extra random delay per packet, up to this many ms.")] = 0.0,
    loss: Annotated[float, typer.Option(help="Probability that a link loses an RPC.")] = 0.0,
    bandwidth: Annotated[
        float | None,
        typer.Option(help="Uplink per node, bytes per second (default: unlimited).", show_default=False),
    ] = None,
    topology: Annotated[
        str, typer.Option(help="random-regular, small-world or clusters.", metavar="KIND")
    ] = "random-regular",
    seed: Annotated[int, typer.Option(help="Seed of every random choice; same seed, same results.")] = 0,
    workers: Annotated[
        int,
        typer.Option(help="Processes sharing the nodes (one per core; results depend on the count too)."),
    ] = 1,
    churn: Annotated[float, typer.Option(help="Fraction of nodes that leave once and come back.")] = 0.0,
    partition: Annotated[
        str | None,
        typer.Option(
            metavar="AT:HEAL",
            help="Split the network in two from AT to HEAL s (AT: never heals).",
            show_default=False,
        ),
    ] = None,
    sybils: Annotated[int, typer.Option(help="Sybils that connect en masse and never forward.")] = 0,
    eclipse: Annotated[int, typer.Option(help="Sybils that all connect to one victim.")] = 0,
    flooders: Annotated[int, typer.Option(help="Attackers flooding invalid messages.")] = 0,
    spammers: Annotated[int, typer.Option(help="Attackers publishing valid junk.")] = 0,
    fast_path: Annotated[
        bool,
        typer.Option("--fast-path", help="Check size and version byte only, instead of decoding envelopes."),
    ] = False,
    no_scoring: Annotated[bool, typer.Option("--no-scoring", help="Turn peer scoring off.")] = False,
    no_idontwant: Annotated[bool, typer.Option("--no-idontwant", help="Never send IDONTWANT.")] = False,
    json_path: Annotated[
        str | None,
        typer.Option(
            "--json",
            metavar="FILE",
            help="Write the results JSON to FILE (- for stdout).",
            show_default=False,
        ),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", metavar="FILE.png", help="Draw the latency CDF and delivery over time."),
    ] = None,
) -> None:
    """Simulate a gossip network of real routers on a virtual clock and report delivery and latency."""
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise UsageError(f"--plot saves a PNG image; give a file name ending in .png, not {plot.name!r}")
        check_output_path(plot, "--plot")
        if importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib: pip install 'meshchat[sim]'")
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
        raise CommandError(f"--topology must be one of {kinds}, not {topology!r}") from None
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
            raise CommandError(f"cannot write {json_path}: {exc.strerror or exc}") from exc
    if plot is not None:
        from meshchat.sim.plot import plot_results  # noqa: PLC0415

        try:
            plot_results(results, plot)
        except OSError as exc:
            raise CommandError(f"cannot write {plot}: {exc.strerror or exc}") from exc
    # With --json - stdout holds the JSON alone, so the table goes to stderr.
    (err if json_path == "-" else stdout_console()).print(_sim_table(results, json_path=json_path, plot=plot))


def _sim_table(results: Results, *, json_path: str | None, plot: Path | None) -> Table:
    from rich.table import Table  # noqa: PLC0415

    latency = results.latency_ms
    table = Table(title="meshchat sim", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    workers = results.parameters.get("workers", 1)
    table.add_row(
        "network",
        f"{results.nodes:,} nodes, seed {results.seed}, {results.validation} validation"
        + (f", {workers} workers" if workers != 1 else ""),
    )
    ratio = "n/a" if results.delivery_ratio is None else f"{results.delivery_ratio:.4f}"
    table.add_row(
        "delivery",
        f"{ratio} ({results.deliveries:,} of {results.expected_deliveries:,} expected, "
        f"{results.messages:,} messages)",
    )
    if latency["p50"] is not None:
        table.add_row(
            "latency ms",
            f"mean {latency['mean']:.0f}  p50 {latency['p50']:.0f}  p90 {latency['p90']:.0f}  "
            f"p99 {latency['p99']:.0f}  max {latency['max']:.0f}",
        )
    duplicates = results.duplicates_per_message
    table.add_row("duplicates", "n/a" if duplicates is None else f"{duplicates:.2f} extra copies per node")
    sent = results.bytes_per_node
    if sent["mean"] is not None and sent["max"] is not None:
        table.add_row("bytes per node", f"mean {sent['mean']:,.0f}  max {sent['max']:,.0f}")
    for layer in ("network", "router"):
        counts = {k: v for k, v in results.drops[layer].items() if v}
        table.add_row(f"{layer} drops", ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "none")
    attack = {k: v for k, v in results.attack.items() if v}
    if attack:
        table.add_row("attack", ", ".join(f"{k} {v}" for k, v in sorted(attack.items())))
    speed = results.virtual_seconds / results.wall_seconds if results.wall_seconds else math.inf
    table.add_row(
        "time",
        f"{results.virtual_seconds:.1f} s virtual in {results.wall_seconds:.1f} s ({speed:.1f}x real time), "
        f"{results.events:,} events",
    )
    if json_path not in (None, "-"):
        table.add_row("results", terminal_markup(str(json_path)))
    if plot is not None:
        table.add_row("plot", terminal_markup(str(plot)))
    return table
