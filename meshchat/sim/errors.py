"""Errors the simulator raises: a scenario that cannot be run, an output that cannot be drawn, a worker
process that failed.

Those two are the caller's doing (a knob out of range, a plot asked for without matplotlib), so both are
``MeshchatError`` subclasses that explain themselves in one line, which is all the CLI prints.
Misbehaving simulated peers never raise: what they do is counted in the results.
"""

from __future__ import annotations

from meshchat.errors import MeshchatError

__all__ = ["PlottingUnavailable", "ScenarioError", "WorkerFailed"]


class ScenarioError(MeshchatError, ValueError):
    """A scenario knob is out of range, or the knobs contradict each other (``nodes=3, degree=6``)."""

    def __init__(self, knob: str, problem: str) -> None:
        self.knob = knob
        self.problem = problem
        super().__init__(f"scenario: {knob}: {problem}")


class PlottingUnavailable(MeshchatError):
    """A plot was asked for but matplotlib is not installed (it is the ``sim`` optional extra)."""

    def __init__(self) -> None:
        super().__init__("plotting needs matplotlib; install it with: pip install 'meshchat[sim]'")


class WorkerFailed(MeshchatError):
    """A worker process of a run with several workers failed; its traceback is in the message."""

    def __init__(self, worker: int, problem: str) -> None:
        self.worker = worker
        self.problem = problem
        super().__init__(f"simulation worker {worker} failed: {problem}")
