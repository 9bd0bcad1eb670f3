"""``meshchat app`` as a real process, for the browser tests: start it on a profile, read the URL it
prints, stop it by PID. Synchronous (Playwright's sync API drives the browser in the same test)."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import make_profile

#: Seconds a process may take to print its URL or to stop.
WAIT = 60.0
#: Debian's Chromium (Playwright's own browser builds are not downloaded).
CHROMIUM = "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent


def artefacts_dir() -> Path:
    """Where screenshots go: ``$MESHCHAT_ARTEFACTS/app`` (default ``artefacts/app``), created."""
    folder = Path(os.environ.get("MESHCHAT_ARTEFACTS", "artefacts")) / "app"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def named_profile(tmp_path: Path, name: str, seed: int) -> Path:
    """A profile folder with an unencrypted key and a display name."""
    folder, _ = make_profile(tmp_path, name.lower(), seed)
    (folder / "profile.json").write_text(json.dumps({"name": name}), encoding="utf-8")
    return folder


@dataclass
class AppProcess:
    """A running ``meshchat app`` and the URL (with its token) it printed."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self.url.split("/?", 1)[0]


def _read_line(process: subprocess.Popen[bytes], deadline: float) -> bytes:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                raise TimeoutError("meshchat app printed no URL in time")
            byte = os.read(process.stdout.fileno(), 1)
            if not byte:
                raise RuntimeError(f"meshchat app ended (status {process.wait()}) before printing a URL")
            line += byte
    return line


@contextmanager
def app_process(profile: Path, log: Path) -> Iterator[AppProcess]:
    """``meshchat app --profile PROFILE --no-open`` on 127.0.0.1; SIGINT (then SIGKILL) at the end."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "LANG": "C.UTF-8", "LANGUAGE": ""}
    env.pop("MESHCHAT_PASSPHRASE", None)
    command = [sys.executable, "-m", "meshchat", "app", "--profile", str(profile), "--no-open"]
    command += ["--listen", "/ip4/127.0.0.1/tcp/0"]
    with log.open("wb") as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, env=env, cwd=REPO)
    try:
        url = _read_line(process, time.monotonic() + WAIT).decode("ascii").strip()
        assert url.startswith("http://127.0.0.1:") and "/?token=" in url, url
        yield AppProcess(process=process, url=url, log=log)
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> int:
    """Stop ``process`` as Ctrl-C would, by PID; kill it if it does not end within ``WAIT``."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGINT)
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(WAIT)
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode
