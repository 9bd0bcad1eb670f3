"""``meshchat sign FILE`` / ``meshchat verify FILE SIG`` offline: the round trip (text and ``--json``),
an altered document (exit 1, the DocumentMismatch message), a signature of another file, a garbled,
forged, truncated, oversized or future-version ``.sig``, and verifying with no profile at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from meshchat import cli
from meshchat.documents.signature import digest_bytes, parse_signature
from meshchat.wire.jose import b64url_decode, b64url_encode, did_key, dump_json, sign_jws

runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv(cli.PROFILE_ENV, raising=False)


def run(*args: str | Path) -> Result:
    return runner.invoke(cli.app, [str(a) for a in args])


def ok(*args: str | Path) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def one_error_line(result: Result) -> str:
    """The failure contract: exit status 1, one ``error:`` line on stderr, nothing on stdout."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def alice(tmp_path: Path) -> Path:
    profile = tmp_path / "alice"
    ok("init", "--profile", profile, "--name", "Alice", "--insecure-no-passphrase")
    return profile


@pytest.fixture
def contract(tmp_path: Path) -> Path:
    path = tmp_path / "contract.txt"
    path.write_bytes(b"Alice sells Bob one bicycle for 100 EUR.\n")
    return path


def test_sign_then_verify_says_who_signed_what_and_when(alice: Path, contract: Path) -> None:
    signed = json.loads(ok("sign", contract, "--profile", alice, "--purpose", "sale", "--json").stdout)
    sig = contract.with_name("contract.txt.sig")
    assert signed["signature"] == str(sig) and sig.is_file()
    me = json.loads(ok("id", "--profile", alice, "--json").stdout)["peer_id"]
    assert signed["signer"]["peer_id"] == me and signed["signer"]["did"].startswith("did:key:z6Mk")
    assert signed["digest"] == digest_bytes(contract.read_bytes()) and signed["purpose"] == "sale"
    # One line of text: a compact JWS, what anyone's tools can parse.
    text = sig.read_text()
    assert text.count("\n") == 1 and text.count(".") == 2
    checked = json.loads(ok("verify", contract, sig, "--profile", alice, "--json").stdout)
    assert checked["valid"] is True and checked["signer"] == {**signed["signer"], "name": "Alice"}
    assert checked["signed_at"] == signed["signed_at"] and checked["name"] == "contract.txt"
    human = ok("verify", contract, sig, "--profile", alice).stdout
    assert "valid" in human and me in human and "Alice" in human and "sale" in human
    assert signed["signer"]["did"] in human


def test_verify_needs_no_profile_and_out_chooses_the_file(
    tmp_path: Path, alice: Path, contract: Path
) -> None:
    out = tmp_path / "elsewhere.sig"
    ok("sign", contract, "--profile", alice, "--out", out)
    assert not contract.with_name("contract.txt.sig").exists()
    nowhere = tmp_path / "no-profile-here"
    checked = json.loads(ok("verify", contract, out, "--profile", nowhere, "--json").stdout)
    assert checked["valid"] is True and checked["signer"]["name"] is None
    assert not nowhere.exists()  # verifying created nothing


def test_an_altered_document_fails_with_the_mismatch(alice: Path, contract: Path) -> None:
    ok("sign", contract, "--profile", alice)
    contract.write_bytes(b"Alice sells Bob one bicycle for 1000 EUR.\n")
    line = one_error_line(run("verify", contract, str(contract) + ".sig", "--profile", alice))
    assert "the document was altered" in line and digest_bytes(contract.read_bytes()) in line


def test_a_signature_of_another_document_does_not_verify_this_one(
    tmp_path: Path, alice: Path, contract: Path
) -> None:
    other = tmp_path / "other.txt"
    other.write_bytes(b"something else")
    ok("sign", other, "--profile", alice)
    line = one_error_line(run("verify", contract, tmp_path / "other.txt.sig"))
    assert "the document was altered" in line


def _resigned(text: str, **header: object) -> str:
    """The same payload, signed by another key with a changed header."""
    from meshchat.identity import Identity  # noqa: PLC0415

    jws_payload = json.loads(b64url_decode(text.split(".")[1], what="payload"))
    mallory = Identity(b"\x07" * 32)
    jws_payload["iss"] = did_key(mallory.public)
    base = {"alg": "EdDSA", "typ": "meshchat-signature+jwt", "v": 1}
    return sign_jws({**base, **header}, jws_payload, mallory.sign)


@pytest.mark.parametrize(
    ("garble", "expected"),
    [
        (lambda t: "not a signature at all", "malformed"),
        (lambda t: t[: len(t) // 2], "malformed"),
        (lambda t: "", "malformed"),
        # another payload under the original signature: a forgery
        (
            lambda t: ".".join(
                [t.split(".")[0], b64url_encode(dump_json({**_payload(t), "iat": 1})), t.split(".")[2]]
            ),
            "does not verify",
        ),
        # the signature's last characters changed
        (lambda t: t[:-4] + ("AAAA" if not t.endswith("AAAA") else "BBBB"), ""),
        (lambda t: _resigned(t, v=2), "version 2"),
    ],
)
def test_a_garbled_or_forged_signature_is_refused_with_a_typed_error(
    alice: Path, contract: Path, garble: object, expected: str
) -> None:
    ok("sign", contract, "--profile", alice)
    sig = contract.with_name("contract.txt.sig")
    text = sig.read_text().strip()
    sig.write_text(garble(text) + "\n")  # type: ignore[operator]
    line = one_error_line(run("verify", contract, sig))
    assert expected in line


def _payload(text: str) -> dict[str, object]:
    value = json.loads(b64url_decode(text.split(".")[1], what="payload"))
    assert isinstance(value, dict)
    return value


def test_an_oversized_or_binary_signature_file_is_refused_before_parsing(
    tmp_path: Path, contract: Path
) -> None:
    huge = tmp_path / "huge.sig"
    huge.write_bytes(b"A" * (5 * 1024 * 1024))
    assert "the limit is" in one_error_line(run("verify", contract, huge))
    binary = tmp_path / "binary.sig"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8" in one_error_line(run("verify", contract, binary))
    assert "cannot read" in one_error_line(run("verify", contract, tmp_path / "missing.sig"))


def test_sign_refuses_a_missing_file_and_a_long_purpose(tmp_path: Path, alice: Path, contract: Path) -> None:
    assert "is not a file" in one_error_line(run("sign", tmp_path / "missing.txt", "--profile", alice))
    long = run("sign", contract, "--profile", alice, "--purpose", "x" * 201)
    assert long.exit_code == 2 and "200 characters" in long.stderr
    assert not contract.with_name("contract.txt.sig").exists()


def test_the_signature_parses_with_the_library_and_names_the_profile_key(alice: Path, contract: Path) -> None:
    ok("sign", contract, "--profile", alice)
    info = parse_signature(contract.with_name("contract.txt.sig").read_text().strip())
    me = json.loads(ok("id", "--profile", alice, "--json").stdout)["peer_id"]
    assert info.signer.peer_id == me and info.size == contract.stat().st_size and info.cosign is None


def test_the_real_command_exits_1_with_one_error_line_for_an_altered_file(
    tmp_path: Path, alice: Path, contract: Path
) -> None:
    """As a user runs it: a process, exit status 1, one ``error:`` line naming the alteration."""
    ok("sign", contract, "--profile", alice)
    contract.write_bytes(contract.read_bytes() + b" ")
    env = {k: v for k, v in os.environ.items() if k not in (cli.PASSPHRASE_ENV, cli.PROFILE_ENV)}
    result = subprocess.run(
        [sys.executable, "-m", "meshchat", "verify", str(contract), str(contract) + ".sig"],
        capture_output=True,
        env={**env, "COLUMNS": "200"},
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and result.stdout == b""
    [line] = result.stderr.decode().splitlines()
    assert line.startswith("error: the document was altered")


# --- verify of a co-signing bundle (.cosign.json) ---------------------------------------------------


def _bundle(tmp_path: Path, data: bytes, *, threshold: int) -> tuple[Path, str]:
    """A round Alice proposed to herself and Bob (``threshold`` needed) and signed; its bundle file."""
    from meshchat.documents.cosign import CosignCore  # noqa: PLC0415
    from meshchat.documents.sqlite import DocumentStore  # noqa: PLC0415
    from meshchat.identity import Identity  # noqa: PLC0415

    alice, bob = Identity(b"\x0b" * 32), Identity(b"\x0c" * 32)
    core = CosignCore(alice, DocumentStore(":memory:"))
    now = 1_780_000_000.0
    proposal, _ = core.propose(
        data,
        digest=digest_bytes(data),
        size=len(data),
        name="lease.txt",
        signers=[alice.public, bob.public],
        threshold=threshold,
        wall_now=now,
    )
    core.sign(proposal.doc_id, wall_now=now + 1)
    path = tmp_path / f"lease-{threshold}.cosign.json"
    path.write_text(core.bundle(proposal.doc_id))
    return path, alice.public.peer_id


def test_verify_reads_a_cosigning_bundle_and_says_whether_its_rule_holds(
    tmp_path: Path, contract: Path
) -> None:
    data = contract.read_bytes()
    complete, alice = _bundle(tmp_path, data, threshold=1)
    checked = json.loads(ok("verify", contract, complete, "--json").stdout)
    assert checked["complete"] is True and checked["threshold"] == 1
    assert [s["signer"]["peer_id"] for s in checked["signatures"]] == [alice]
    assert len(checked["missing"]) == 1
    human = ok("verify", contract, complete).stdout
    assert human.startswith("complete:") and alice in human and "missing" in human
    # One of two needed: the report, then exit 1 with one error line.
    partial, _ = _bundle(tmp_path, data, threshold=2)
    result = run("verify", contract, partial, "--json")
    assert result.exit_code == 1 and json.loads(result.stdout)["complete"] is False
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and "1 valid signature(s), 2 needed" in line
    # Another document, a garbled bundle, a future version: typed errors, nothing on stdout.
    contract.write_bytes(data + b"!")
    assert "the document was altered" in one_error_line(run("verify", contract, complete))
    contract.write_bytes(data)
    complete.write_text(complete.read_text().replace('"proposal"', '"proposa1"'))
    assert "malformed" in one_error_line(run("verify", contract, complete))
    complete.write_text(json.dumps({**json.loads(partial.read_text()), "v": 2}))
    assert "version 2" in one_error_line(run("verify", contract, complete))


def test_the_offline_commands_load_no_network_stack(tmp_path: Path, alice: Path, contract: Path) -> None:
    """`sign`, `verify`, `cosign list | status | export` read files and documents.db without py-libp2p
    (a fast start)."""
    from meshchat.documents.cosign import CosignCore  # noqa: PLC0415
    from meshchat.documents.sqlite import DOCUMENTS_FILE, DocumentStore  # noqa: PLC0415
    from meshchat.identity import load_identity  # noqa: PLC0415
    from meshchat.store.encrypted import store_key  # noqa: PLC0415

    identity = load_identity(alice / "identity.key", None)
    data = contract.read_bytes()
    store = DocumentStore(alice / DOCUMENTS_FILE, key=store_key(identity))
    try:
        proposal, _ = CosignCore(identity, store).propose(
            data, digest=digest_bytes(data), size=len(data), name="c.txt", signers=[identity.public],
            threshold=1, wall_now=1_780_000_000.0,
        )  # fmt: skip
    finally:
        store.close()
    bundle = tmp_path / "c.cosign.json"
    heavy = ("libp2p", "meshchat.node", "meshchat.net")
    for command in (
        ["sign", str(contract)],
        ["verify", str(contract), str(contract) + ".sig"],
        ["cosign", "list"],
        ["cosign", "status", proposal.doc_id[:8]],
        ["cosign", "export", proposal.doc_id, "--out", str(bundle)],
    ):
        code = (
            "import json, sys\n"
            "from meshchat.cli import main\n"
            f"sys.argv = ['meshchat', *{command!r}, '--profile', {str(alice)!r}, '--json']\n"
            "try:\n"
            "    main()\n"
            "except SystemExit as exc:\n"
            "    assert exc.code in (0, None), exc.code\n"
            f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
        )
        env = {k: v for k, v in os.environ.items() if k not in (cli.PASSPHRASE_ENV, cli.PROFILE_ENV)}
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            encoding="utf-8",
            env=env,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        printed, loaded = result.stdout.splitlines()
        assert json.loads(loaded) == [], command
        if command[:2] == ["cosign", "status"]:
            assert json.loads(printed)["doc_id"] == proposal.doc_id and json.loads(printed)["state"] == "open"
    assert bundle.is_file()


class _Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, object]]] = []

    def event(self, kind: str, text: str, **fields: object) -> None:
        self.lines.append((kind, text, fields))


def test_document_events_read_as_sentences_with_names_and_cannot_drive_the_terminal() -> None:
    from meshchat.cli.documents import DOCUMENT_EVENTS, describe_document_event  # noqa: PLC0415
    from meshchat.documents.cosign import CosignCore  # noqa: PLC0415
    from meshchat.documents.events import (  # noqa: PLC0415
        DocumentCompleted,
        DocumentProposed,
        DocumentRevoked,
        DocumentSigned,
        DocumentStamped,
    )
    from meshchat.documents.sqlite import DocumentStore  # noqa: PLC0415
    from meshchat.identity import Identity  # noqa: PLC0415

    alice, bob = Identity(b"\x0b" * 32), Identity(b"\x0c" * 32)
    data = b"text"
    core = CosignCore(alice, DocumentStore(":memory:"))
    proposal, _ = core.propose(
        data, digest=digest_bytes(data), size=4, name="evil\x1b[2J.txt", signers=[alice.public, bob.public],
        threshold=2, wall_now=1_780_000_000.0,
    )  # fmt: skip
    doc = proposal.doc_id
    names = {bob.public.peer_id: "Bob\u202e"}
    printer = _Lines()
    for event in (
        DocumentProposed(core.view(doc)),
        DocumentSigned(doc, bob.public),
        DocumentRevoked(doc, bob.public),
        DocumentCompleted(doc),
        DocumentStamped(doc, alice.public, bob.public),
    ):
        describe_document_event(event, printer, names=names)
    kinds = [kind for kind, _, _ in printer.lines]
    assert kinds == [
        "document_proposed", "document_signed", "document_revoked", "document_completed", "document_stamped"
    ]  # fmt: skip
    assert set(kinds) == DOCUMENT_EVENTS
    texts = [text for _, text, _ in printer.lines]
    assert texts[0].startswith(f"{alice.public.peer_id} proposed evil") and "2 of 2" in texts[0]
    assert "\x1b" not in texts[0] and all("\u202e" not in t for t in texts)
    assert texts[1] == f"Bob\\u202e signed {doc}" and "revoked" in texts[2] and "is signed" in texts[3]
    assert printer.lines[4][2] == {
        "doc_id": doc,
        "signer": alice.public.peer_id,
        "witness": bob.public.peer_id,
    }
    assert printer.lines[0][2]["name"] == "evil\x1b[2J.txt"  # JSON carries it exactly


def test_text_on_standard_input_is_signed_and_verified(alice: Path, tmp_path: Path) -> None:
    """``meshchat sign -`` signs text from a pipe (the signature on stdout); ``verify -`` checks it."""
    text = "I, Alice, agree to return the ladder by Friday.\n"
    signed = runner.invoke(cli.app, ["sign", "-", "--profile", str(alice)], input=text)
    assert signed.exit_code == 0, signed.output
    signature = signed.stdout.strip()
    info = parse_signature(signature)
    assert info.digest == digest_bytes(text.encode()) and info.name is None
    sig = tmp_path / "ladder.sig"
    sig.write_text(signature + "\n")
    checked = runner.invoke(cli.app, ["verify", "-", str(sig), "--json"], input=text)
    assert checked.exit_code == 0, checked.output
    assert json.loads(checked.stdout)["valid"] is True
    altered = runner.invoke(cli.app, ["verify", "-", str(sig)], input=text.replace("Friday", "Monday"))
    assert "the document was altered" in one_error_line(altered)
    as_json = runner.invoke(cli.app, ["sign", "-", "--profile", str(alice), "--json"], input=text)
    assert parse_signature(json.loads(as_json.stdout)["signature"]).digest == info.digest
