"""The ``meshchat`` command as a user and a script see it: output, exit status, files, and error lines.

Most tests run the typer app in-process with ``CliRunner`` (its stdin is never a terminal, which is what
the passphrase tests rely on); two run real processes, to cover ``python -m meshchat`` and the installed
console script. Profiles are created with ``--insecure-no-passphrase`` unless a test is about
passphrases, because each argon2id derivation costs ~0.2 s.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from meshchat import cli
from meshchat.cli import common
from meshchat.cli.demo import DEMO_MESSAGES
from meshchat.cli.identity import QR_PNG_SCALE
from meshchat.cli.runner import _ChatPrinter
from meshchat.identity import is_encrypted, load_identity, read_public_key, safety_number
from meshchat.identity.keys import PublicIdentity
from meshchat.wire import Invite

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Side of the smallest QR code (version 1, 21 modules) at the CLI's scale, without its quiet zone.
SMALLEST_QR_PIXELS = 21 * QR_PNG_SCALE

runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own passphrase or profile must neither leak into nor be touched by the tests.
    monkeypatch.delenv(cli.PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv(cli.PROFILE_ENV, raising=False)


def run(*args: str | Path, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return runner.invoke(cli.app, [str(a) for a in args], env=env, input=stdin)


def init(profile: Path, name: str = "Alice", *extra: str) -> Result:
    result = run("init", "--profile", profile, "--name", name, "--insecure-no-passphrase", "--json", *extra)
    assert result.exit_code == 0, result.output
    return result


def invite_token(profile: Path, *extra: str, env: dict[str, str] | None = None) -> str:
    result = run("invite", "--profile", profile, *extra, env=env)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def assert_one_error_line(result: Result, *, exit_code: int = 1) -> str:
    """The failure contract: the exit status, one ``error:`` line on stderr, nothing on stdout."""
    assert result.exit_code == exit_code, result.output
    # A library exception escaping the handler would also give exit status 1 under CliRunner.
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    return lines[0]


# --- init and id ----------------------------------------------------------------------------------


def test_init_then_id_shows_the_same_peer_id_and_the_key_file_holds_it(tmp_path: Path) -> None:
    profile = tmp_path / "alice"
    created = json.loads(init(profile).stdout)
    shown = run("id", "--profile", profile, "--json")
    assert shown.exit_code == 0, shown.output
    identity = json.loads(shown.stdout)

    loaded = load_identity(profile / cli.KEY_FILE, None)
    assert created["peer_id"] == identity["peer_id"] == loaded.public.peer_id
    assert created["fingerprint"] == identity["fingerprint"] == loaded.public.fingerprint
    assert len(identity["fingerprint"].replace(" ", "")) == 30
    assert identity["name"] == "Alice" and created["encrypted"] is False
    assert json.loads((profile / cli.PROFILE_FILE).read_text(encoding="utf-8")) == {"name": "Alice"}

    human = run("id", "--profile", profile)
    assert human.exit_code == 0 and loaded.public.peer_id in human.stdout


def test_init_warns_on_stderr_when_the_key_is_stored_unencrypted(tmp_path: Path) -> None:
    result = init(tmp_path / "p")
    assert "NOT encrypted" in result.stderr
    assert "NOT encrypted" not in result.stdout  # stdout stays one JSON object
    json.loads(result.stdout)


def test_init_with_a_passphrase_from_the_environment_encrypts_the_key(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    result = run("init", "--profile", profile, "--json", env={cli.PASSPHRASE_ENV: "correct horse"})
    assert result.exit_code == 0, result.output
    key_path = profile / cli.KEY_FILE
    assert is_encrypted(key_path)
    assert json.loads(result.stdout)["encrypted"] is True
    assert "NOT encrypted" not in result.stderr
    assert load_identity(key_path, "correct horse").public.peer_id == json.loads(result.stdout)["peer_id"]


def test_init_refuses_to_replace_an_existing_identity(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    init(profile)
    before = (profile / cli.KEY_FILE).read_bytes()
    line = assert_one_error_line(run("init", "--profile", profile, "--insecure-no-passphrase"))
    assert "already holds a meshchat identity" in line
    assert (profile / cli.KEY_FILE).read_bytes() == before


def test_init_rejects_a_name_no_invite_could_carry_before_writing_anything(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    line = assert_one_error_line(
        run("init", "--profile", profile, "--name", "x" * 65, "--insecure-no-passphrase")
    )
    assert "--name" in line and "64" in line
    assert not profile.exists()


def test_the_profile_folder_defaults_to_the_environment_variable(tmp_path: Path) -> None:
    profile = tmp_path / "from-env"
    result = run("init", "--insecure-no-passphrase", "--json", env={cli.PROFILE_ENV: str(profile)})
    assert result.exit_code == 0, result.output
    assert (profile / cli.KEY_FILE).is_file()
    shown = json.loads(run("id", "--profile", profile, "--json").stdout)
    assert shown["peer_id"] == json.loads(result.stdout)["peer_id"]


# --- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command", [["id"], ["invite"], ["invite", "--json"], ["safety-number", "MESHCHAT:AAAA"]]
)
def test_a_missing_profile_is_one_error_line_that_says_how_to_create_it(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "nobody"
    line = assert_one_error_line(run(*command, "--profile", missing))
    assert line == f"error: no meshchat profile in {missing}; run: meshchat init --profile {missing}"


def test_a_wrong_passphrase_is_reported_as_such(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    assert run("init", "--profile", profile, env={cli.PASSPHRASE_ENV: "right"}).exit_code == 0
    line = assert_one_error_line(run("invite", "--profile", profile, env={cli.PASSPHRASE_ENV: "wrong"}))
    assert "wrong passphrase" in line and cli.PASSPHRASE_ENV in line
    assert invite_token(profile, env={cli.PASSPHRASE_ENV: "right"}).startswith("MESHCHAT:")


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_a_key_file_others_may_read_is_refused_with_a_permissions_error(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    init(profile)
    (profile / cli.KEY_FILE).chmod(0o644)
    for command in ("id", "invite"):
        line = assert_one_error_line(run(command, "--profile", profile))
        assert "permissions" in line and "chmod 600" in line


def test_no_passphrase_and_no_terminal_fails_at_once_instead_of_waiting(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    line = assert_one_error_line(run("init", "--profile", profile))
    assert line == "error: a passphrase is needed: set MESHCHAT_PASSPHRASE or run in a terminal"
    assert not (profile / cli.KEY_FILE).exists()

    assert run("init", "--profile", profile, env={cli.PASSPHRASE_ENV: "pw"}).exit_code == 0
    line = assert_one_error_line(run("invite", "--profile", profile))
    assert line == "error: a passphrase is needed: set MESHCHAT_PASSPHRASE or run in a terminal"


def test_an_empty_passphrase_is_refused(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    line = assert_one_error_line(run("init", "--profile", profile, env={cli.PASSPHRASE_ENV: ""}))
    assert "empty" in line
    assert not (profile / cli.KEY_FILE).exists()


def test_prompted_passphrases_must_match_and_then_protect_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: list[str] = []
    monkeypatch.setattr(common, "_stdin_is_interactive", lambda: True)
    monkeypatch.setattr(common, "_ask_hidden", lambda prompt: answers.pop(0))
    profile = tmp_path / "p"

    answers[:] = ["first", "second"]
    assert "do not match" in assert_one_error_line(run("init", "--profile", profile))
    assert not (profile / cli.KEY_FILE).exists()

    answers[:] = ["same", "same"]
    assert run("init", "--profile", profile).exit_code == 0
    assert load_identity(profile / cli.KEY_FILE, "same").public.ed25519 == read_public_key(
        profile / cli.KEY_FILE
    )
    answers[:] = ["same"]  # loading asks once, without confirmation
    assert invite_token(profile).startswith("MESHCHAT:")
    assert answers == []


def test_ctrl_c_at_the_passphrase_prompt_exits_130_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(prompt: str) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(common, "_stdin_is_interactive", lambda: True)
    monkeypatch.setattr(common, "_ask_hidden", interrupted)
    result = run("init", "--profile", tmp_path / "p")
    assert result.exit_code == 130
    assert "Traceback" not in result.output and "error" not in result.output
    assert not (tmp_path / "p" / cli.KEY_FILE).exists()


def test_a_command_line_that_does_not_parse_is_one_error_line(tmp_path: Path) -> None:
    line = assert_one_error_line(run("init", "--profile", tmp_path, "--bogus"), exit_code=2)
    assert "--bogus" in line and "meshchat init --help" in line


def test_a_corrupt_profile_json_is_one_error_line(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    init(profile)
    (profile / cli.PROFILE_FILE).write_text("{not json", encoding="utf-8")
    assert cli.PROFILE_FILE in assert_one_error_line(run("id", "--profile", profile))


# --- invite ---------------------------------------------------------------------------------------


def test_the_invite_token_is_alone_on_stdout_and_round_trips(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    init(profile, "Алиса 🌿")
    addrs = ("/ip4/192.0.2.7/tcp/4001", "/dns4/example.org/udp/4001/quic-v1")
    result = run("invite", "--profile", profile, "--addr", addrs[0], "--addr", addrs[1])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("MESHCHAT:")
    assert "safety numbers" in result.stderr  # the decoration went to stderr

    card = Invite.from_text(result.stdout)
    assert card.public.ed25519 == read_public_key(profile / cli.KEY_FILE)
    assert card.name == "Алиса 🌿"
    assert card.addrs == addrs


def test_invite_name_overrides_the_profile_name_and_json_carries_the_token(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    init(profile, "Alice")
    result = run("invite", "--profile", profile, "--name", "Ally", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    card = Invite.from_text(data["token"])
    assert card.name == data["name"] == "Ally" and data["addrs"] == [] and data["qr"] is None
    assert data["peer_id"] == card.public.peer_id


def test_invite_qr_writes_a_real_png(tmp_path: Path) -> None:
    profile, png = tmp_path / "p", tmp_path / "invite.png"
    init(profile)
    token = invite_token(profile, "--qr", str(png), "--addr", "/ip4/192.0.2.7/tcp/4001")
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width == height > SMALLEST_QR_PIXELS  # a ~190-character token needs far more than version 1
    assert len(data) > 500
    assert Invite.from_text(token).addrs == ("/ip4/192.0.2.7/tcp/4001",)


def test_invite_qr_refuses_other_formats_and_unwritable_paths(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    init(profile)
    assert ".png" in assert_one_error_line(run("invite", "--profile", profile, "--qr", tmp_path / "x.svg"))
    line = assert_one_error_line(run("invite", "--profile", profile, "--qr", tmp_path / "no" / "x.png"))
    assert "cannot write the QR code" in line


def test_invite_rejects_an_address_that_is_not_a_multiaddr(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    init(profile)
    line = assert_one_error_line(run("invite", "--profile", profile, "--addr", "example.org:4001"))
    assert "not a multiaddr" in line


def test_invite_qr_terminal_draws_on_stderr_only(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    init(profile)
    result = run("invite", "--profile", profile, "--qr-terminal", "--json")
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)
    assert "█" in result.stderr and "█" not in result.stdout


# --- safety numbers -------------------------------------------------------------------------------


def test_alice_and_bob_see_the_same_safety_number(tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    init(alice, "Alice")
    init(bob, "Bob")
    alice_token, bob_token = invite_token(alice), invite_token(bob)

    alice_view = run("safety-number", "--profile", alice, bob_token, "--json")
    bob_view = run("safety-number", "--profile", bob, alice_token, "--json")
    assert alice_view.exit_code == bob_view.exit_code == 0, alice_view.output + bob_view.output
    a, b = json.loads(alice_view.stdout), json.loads(bob_view.stdout)
    assert a["safety_number"] == b["safety_number"]
    assert (a["name"], b["name"]) == ("Bob", "Alice")
    assert a["own_invite"] is False

    keys = [PublicIdentity.from_bytes(read_public_key(p / cli.KEY_FILE)) for p in (alice, bob)]
    assert a["safety_number"] == safety_number(*keys)
    assert a["peer_id"] == keys[1].peer_id

    human = run("safety-number", "--profile", alice, bob_token)
    assert human.exit_code == 0, human.output
    rows = [line.strip("│ ") for line in human.stdout.splitlines() if line.count(" ") and _digit_row(line)]
    assert len(rows) == 3 and all(len(row.split()) == 4 for row in rows)
    assert " ".join(rows) == a["safety_number"]
    assert "in person" in human.stdout and keys[1].peer_id in human.stdout


def _digit_row(line: str) -> bool:
    groups = line.strip("│ ").split()
    return bool(groups) and all(len(g) == 5 and g.isdigit() for g in groups)


def test_safety_number_reads_the_invite_from_stdin(tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    init(alice)
    init(bob, "Bob")
    token = invite_token(bob)
    wrapped = "\n".join(token[i : i + 60] for i in range(0, len(token), 60)) + "\n"
    result = run("safety-number", "--profile", alice, "-", "--json", stdin=wrapped)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "Bob"


def test_a_tampered_invite_is_rejected(tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    init(alice)
    init(bob, "Bob")
    token = invite_token(bob)
    middle = len(token) // 2
    swapped = "A" if token[middle] != "A" else "B"
    tampered = token[:middle] + swapped + token[middle + 1 :]
    assert_one_error_line(run("safety-number", "--profile", alice, tampered))
    assert_one_error_line(run("safety-number", "--profile", alice, "--json", tampered))


# --- demo and real processes ----------------------------------------------------------------------


def test_demo_json_reports_verified_messages_and_the_expected_failures() -> None:
    result = run("demo", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [m["text"] for m in summary["messages"]] == [text for _, text in DEMO_MESSAGES]
    assert {m["sender"] for m in summary["messages"]} == {"Alice"}
    assert summary["carol"] == "DecryptionFailed"
    assert summary["tampered"] == "DecryptionFailed"
    assert summary["relay_view"]["sender"] == "not visible"
    assert len(summary["relay_view"]["message_id"]) == 64
    assert len(summary["safety_number"].split()) == 12
    assert summary["timings_ms"]["seal"] > 0 and summary["timings_ms"]["open"] > 0
    network = summary["network"]  # the same messages across four real nodes on 127.0.0.1
    assert network["hops"] == 3 and len(set(network["path"])) == 4
    assert len(network["latency_ms"]) == len(DEMO_MESSAGES)
    assert all(ms > 0 for ms in network["latency_ms"])
    # Both relays carried each message, and (by the time they were counted) some of Bob's signed
    # receipts on their way back; at most one receipt per message.
    assert all(len(DEMO_MESSAGES) <= n <= 2 * len(DEMO_MESSAGES) for n in network["relay_envelopes"])
    assert network["relay_readable"] == 0
    # Store-and-forward: Bob offline, the mailbox kept two messages; he synced them; receipts came back.
    assert network["offline"]["messages"] == 2
    assert network["offline"]["statuses"] == ["delivered", "delivered"]


def _process_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (cli.PASSPHRASE_ENV, cli.PROFILE_ENV)}
    return {**env, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}


def test_python_dash_m_meshchat_help_lists_the_commands_and_errors_stay_one_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "meshchat"]
    helped = subprocess.run(
        [*command, "--help"],
        capture_output=True,
        encoding="utf-8",
        env=_process_env(),
        timeout=60,
        check=False,
    )
    assert helped.returncode == 0, helped.stderr
    for name in ("init", "id", "invite", "safety-number", "demo", "node", "add", "send", "chat"):
        assert name in helped.stdout

    failed = subprocess.run(
        [*command, "id", "--profile", str(tmp_path / "none")],
        capture_output=True,
        encoding="utf-8",
        env=_process_env(),
        timeout=60,
        check=False,
    )
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert failed.stderr.startswith("error: no meshchat profile in") and failed.stderr.count("\n") == 1


def test_the_installed_meshchat_demo_runs_and_shows_the_failures_it_promises() -> None:
    executable = shutil.which("meshchat", path=str(Path(sys.executable).parent))
    assert executable is not None, "the meshchat console script is not installed next to this Python"
    result = subprocess.run(
        [executable, "demo"],
        capture_output=True,
        encoding="utf-8",
        env=_process_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "DecryptionFailed" in result.stdout
    assert "Alice ✓" in result.stdout  # the verified sender, named by comparing keys
    assert "not visible" in result.stdout
    for _, text in DEMO_MESSAGES:
        assert text in result.stdout
    assert "Traceback" not in result.stderr


# --- node -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--listen", "nonsense"], "bad address 'nonsense'"),
        (["--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", "/ip4/127.0.0.1/tcp/1"], "/p2p/<PeerId>"),
        (["--stdin"], "--stdin publishes to the first --topic"),
    ],
    ids=["bad-listen", "bootstrap-without-peer-id", "stdin-without-topic"],
)
def test_node_refuses_bad_arguments_with_one_error_line(
    tmp_path: Path, extra: list[str], expected: str
) -> None:
    init(tmp_path)
    line = assert_one_error_line(run("node", "--profile", tmp_path, *extra))
    assert expected in line


def test_node_without_a_profile_says_how_to_make_one(tmp_path: Path) -> None:
    line = assert_one_error_line(run("node", "--profile", tmp_path / "nobody"))
    assert "meshchat init" in line


def test_network_commands_refuse_a_bad_libp2p_log_level(tmp_path: Path) -> None:
    init(tmp_path)
    line = assert_one_error_line(run("node", "--profile", tmp_path, env={cli.LIBP2P_LOG_ENV: "loud"}))
    assert "MESHCHAT_LIBP2P_LOG" in line


def test_libp2p_log_records_reach_stderr_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging  # noqa: PLC0415

    import meshchat.net  # noqa: F401, PLC0415 (installs the NullHandler on the libp2p logger)

    logger = logging.getLogger("libp2p")
    handlers, level = list(logger.handlers), logger.level
    try:
        monkeypatch.delenv(cli.LIBP2P_LOG_ENV, raising=False)
        common.quiet_libp2p()
        logging.getLogger("libp2p.test").error("unasked")
        monkeypatch.setenv(cli.LIBP2P_LOG_ENV, "error")
        common.quiet_libp2p()
        logging.getLogger("libp2p.test").error("asked for")
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
    err = capsys.readouterr().err
    assert "unasked" not in err
    assert "asked for" in err


def test_chat_on_a_terminal_reads_as_a_conversation() -> None:
    out = io.StringIO()
    printer = _ChatPrinter(out)
    data = base64.b64encode("Привет!".encode()).decode()
    printer.event("direct", "from Alice: Привет!", contact="Alice", sender="12D3KooWxyz", data=data)
    printer.event("sent", "to Alice", data=base64.b64encode(b"[hi] back").decode())
    printer.event("peer_connected", "12D3KooWxyz (/meshsub/1.2.0, inbound)")
    lines = out.getvalue().splitlines()
    assert lines[0].endswith(" Alice: Привет!")
    assert lines[1].endswith(" you → Alice: [hi] back")  # rich markup in a message is shown, not run
    assert lines[2].endswith(" peer_connected: 12D3KooWxyz (/meshsub/1.2.0, inbound)")


# --- start-up -------------------------------------------------------------------------------------

#: Modules ``meshchat --help`` must not load: each takes a noticeable part of a second to import.
HEAVY_MODULES = ("libp2p", "trio", "matplotlib", "meshchat.sim", "meshchat.node", "meshchat.net")


def test_help_and_importing_the_cli_load_no_network_stack_or_simulator() -> None:
    """Import-time regression guard (timings are the benchmark's job: bench_cli_startup.py)."""
    code = (
        "import json, sys\n"
        "from meshchat.cli import main\n"
        "sys.argv = ['meshchat', '--help']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps([m for m in {HEAVY_MODULES!r} if m in sys.modules]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        encoding="utf-8",
        env=_process_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Commands" in result.stdout  # the help was printed
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_version_prints_the_package_version() -> None:
    from meshchat import __version__  # noqa: PLC0415

    result = run("--version")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"meshchat {__version__}\n"


def test_mailbox_help_names_the_library_defaults() -> None:
    """``mailbox`` leaves unset quotas to ``MailboxLimits`` (so --help need not import the store layer)
    and names its defaults in the help: they must stay the same numbers."""
    from meshchat.store.mailbox import MailboxLimits  # noqa: PLC0415

    limits = MailboxLimits()
    assert (limits.per_tag_bytes, limits.per_peer_bytes, limits.total_bytes) == (8 << 20, 64 << 20, 1 << 30)
    shown = run("mailbox", "--help", env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    for text in ("default: 8 MiB", "default: 64 MiB", "default: 1 GiB"):
        assert text in shown.stdout


def test_mailbox_refuses_a_quota_that_is_not_positive(tmp_path: Path) -> None:
    init(tmp_path)
    line = assert_one_error_line(run("mailbox", "--profile", tmp_path, "--quota-tag", "0"))
    assert "positive byte counts" in line
