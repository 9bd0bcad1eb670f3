"""``meshchat sim`` as a user and a script see it: the table, the JSON, the plot, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

import meshchat.sim
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


@pytest.mark.parametrize(
    ("option", "target", "message"),
    [
        ("--plot", "missing/run.png", "does not exist"),
        ("--plot", "folder.png", "is a folder"),
        ("--plot", "run.svg", "PNG"),
        ("--json", "missing/out.json", "does not exist"),
        ("--json", "folder.png", "is a folder"),
        ("--json", "file/out.json", "is not a folder"),
    ],
    ids=[
        "plot-missing-folder",
        "plot-onto-folder",
        "plot-not-png",
        "json-missing-folder",
        "json-onto-folder",
        "json-under-a-file",
    ],
)
def test_output_paths_are_checked_before_the_simulation_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str, target: str, message: str
) -> None:
    """A bad --plot or --json path fails at once (exit 2, one line), not after a run of minutes."""
    runs: list[object] = []
    monkeypatch.setattr(meshchat.sim, "run", lambda *a, **k: runs.append(a))
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "file").write_text("")
    result = sim(*SMALL, option, tmp_path / target)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert option in lines[0]
    assert runs == []  # the simulation never started
    assert "Traceback" not in result.output


def test_a_plot_and_json_in_good_folders_still_run(tmp_path: Path) -> None:
    result = sim(*SMALL, "--plot", tmp_path / "run.png", "--json", tmp_path / "run.json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run.png").read_bytes().startswith(PNG_SIGNATURE)
    assert json.loads((tmp_path / "run.json").read_text())["nodes"] == 16
