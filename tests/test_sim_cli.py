"""``meshchat sim`` as a user and a script see it: the table, the JSON, the plot, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from meshchat import cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = ("--nodes", "16", "--degree", "4", "--messages", "8", "--seed", "3")

runner = CliRunner()


def sim(*args: str | Path) -> Result:
    return runner.invoke(cli.app, ["sim", *(str(a) for a in args)])


def test_json_on_stdout_is_the_only_thing_there() -> None:
    result = sim(*SMALL, "--latency", "20-40ms", "--loss", "0.01", "--json", "-")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["nodes"] == 16 and data["messages"] == 8 and data["seed"] == 3
    assert data["parameters"]["latency"] == "20-40ms" and data["parameters"]["loss"] == 0.01
    assert data["validation"] == "envelope"
    assert "meshchat sim" in result.stderr  # the summary table moved to stderr


def test_the_same_command_writes_byte_identical_json(tmp_path: Path) -> None:
    """Regression: the file differed in ``wall_seconds``; now the wall time is only in the table."""
    for name in ("a.json", "b.json"):
        result = sim(*SMALL, "--churn", "0.2", "--sybils", "2", "--json", tmp_path / name)
        assert result.exit_code == 0, result.output
        assert " s virtual in " in result.stdout  # the wall time is still reported, in the table
    first = (tmp_path / "a.json").read_bytes()
    assert first == (tmp_path / "b.json").read_bytes()
    assert "wall_seconds" not in json.loads(first)


def test_two_workers_share_a_run_and_repeat_it_exactly(tmp_path: Path) -> None:
    outputs = []
    for name in ("a.json", "b.json"):
        result = sim(*SMALL, "--churn", "0.2", "--sybils", "2", "--workers", "2", "--json", tmp_path / name)
        assert result.exit_code == 0, result.output
        assert "2 workers" in result.stdout
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    data = json.loads(outputs[0])
    assert data["parameters"]["workers"] == 2 and data["delivery_ratio"] > 0.9


def test_table_and_plot(tmp_path: Path) -> None:
    plot = tmp_path / "run.png"
    result = sim(
        *SMALL, "--partition", "6:7", "--fast-path", "--no-scoring", "--no-idontwant", "--plot", plot
    )
    assert result.exit_code == 0, result.output
    assert "delivery" in result.stdout and "latency ms" in result.stdout and "fast-path" in result.stdout
    assert plot.read_bytes().startswith(PNG_SIGNATURE)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--latency", "fast"), "latency"),
        (("--nodes", "3", "--degree", "6"), "degree"),
        (("--partition", "5"), "AT:HEAL"),
        (("--topology", "ring"), "--topology"),
        (("--loss", "1.5"), "loss"),
        (("--plot", "out.svg"), "PNG"),
        (("--workers", "2", "--latency", "lognormal:80ms"), "workers"),
        (("--workers", "0"), "workers"),
    ],
)
def test_bad_options_give_one_error_line(args: tuple[str, ...], message: str) -> None:
    result = sim(*args)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_an_unwritable_json_path_is_one_error_line(tmp_path: Path) -> None:
    result = sim(*SMALL, "--json", tmp_path / "missing" / "out.json")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: cannot write")
