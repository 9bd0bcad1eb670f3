"""``meshchat app`` as a real process: it prints the URL with its token, serves the pages on 127.0.0.1
only, and stops cleanly (exit 0) on Ctrl-C."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from app_harness import REPO, app_process, named_profile

APP = [sys.executable, "-m", "meshchat", "app"]
LOOPBACK = ["--listen", "/ip4/127.0.0.1/tcp/0"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_app_prints_its_url_serves_on_loopback_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    profile = named_profile(tmp_path, "Carol", 31)
    with app_process(profile, tmp_path / "app.log") as app:
        port = int(app.base.rsplit(":", 1)[1])
        opener = urllib.request.build_opener(_NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirect:
            opener.open(app.url, timeout=30)
        redirect.value.close()
        assert redirect.value.code == 303
        cookie = redirect.value.headers["set-cookie"].split(";")[0]
        request = urllib.request.Request(app.base + "/", headers={"Cookie": cookie})
        with urllib.request.urlopen(request, timeout=30) as page:
            assert page.status == 200 and b"/static/app.js" in page.read()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(app.base + "/", timeout=30)
        refused.value.close()
        assert refused.value.code == 403
        # nothing listens on the machine's other addresses
        others = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
        for address in others - {"127.0.0.1"}:
            with socket.socket() as probe, pytest.raises(OSError):
                probe.settimeout(5)
                probe.connect((address, port))
    assert app.process.returncode == 0, app.log.read_text()
    assert "stopped" in app.log.read_text()


def test_app_help_names_its_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meshchat", "app", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "LANG": "C.UTF-8", "COLUMNS": "120", "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=True,
    )
    for option in ("--profile", "--port", "--no-open", "--listen", "--bootstrap", "--mailbox"):
        assert option in result.stdout


def test_a_taken_port_is_one_error_line(tmp_path: Path) -> None:
    profile = named_profile(tmp_path, "Dora", 32)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*APP, "--profile", str(profile), "--no-open", "--port", str(port), *LOOPBACK],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={"PYTHONPATH": str(REPO), "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"},
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"error: cannot serve the app on 127.0.0.1:{port}: Address already in use"
    )
    assert "Traceback" not in result.stderr
