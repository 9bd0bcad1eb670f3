"""``meshchat credential ...`` as a user runs it: real ``meshchat`` processes on 127.0.0.1, a passphrase
in ``$MESHCHAT_PASSPHRASE``, profiles in a temporary folder.

A school, a graduate (Ann) and an employer. Ann asks the school for a diploma and waits for it
(``request --wait``); the school's running node keeps the request; the school, its node stopped,
issues against it (``issue --to Ann``) and publishes its status list to the employer's running node
(``--bootstrap``); Ann presents one claim (``present --one-way --qr``); the employer verifies offline
(text and QR payload); the school revokes; the employer's next verification fails. Every process is
stopped by its PID and reaped; every wait is bounded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from test_cli_group import LOCAL, WAIT, json_of, meshchat, processes


async def _verify_until(employer: Path, text: str, *, ok: bool) -> Any:
    """Verify ``text`` at the employer (its node writing the status cache meanwhile) until the answer
    is ``ok`` (or, for ``ok=False``, a revocation); bounded by a number of tries, no sleeps: each try
    is a process start."""
    last: Any = None
    for _ in range(30):
        last = await meshchat("credential", "verify", text, "--profile", employer, "--json", check=False)
        if ok and last.returncode == 0:
            return json.loads(last.stdout)
        if not ok and b"revoked this credential" in last.stderr:
            return last
    raise AssertionError(last.stderr.decode())


@pytest.mark.slow  # a dozen meshchat processes, three of them nodes: ~45 s
async def test_request_issue_present_verify_revoke(tmp_path: Path) -> None:
    school, ann, employer = tmp_path / ".school", tmp_path / ".ann", tmp_path / ".employer"
    for folder, name in ((school, "School"), (ann, "Ann"), (employer, "Employer")):
        await meshchat("init", "--profile", folder, "--name", name)
    school_did = (await json_of("credential", "list", "--profile", school))["did"]
    trusted = await json_of("credential", "trust", school_did, "--name", "Springfield", "--profile", employer)
    assert trusted == {"trusted": school_did, "name": "Springfield"}
    # an issue with nobody's request: one error line, exit 1
    await meshchat("add", "--profile", school, (await meshchat("invite", "--profile", ann)).stdout.decode())
    refused = await meshchat(
        "credential", "issue", "--to", "Ann", "--type", "diploma", "--claim", "a=1", "--profile", school,
        check=False,
    )  # fmt: skip
    assert refused.returncode == 1 and refused.stdout == b""
    assert refused.stderr.decode().startswith("error: no pending request from Ann for a 'diploma' credential")
    async with processes(tmp_path) as start:
        school_node = await start("node", "--profile", school, "--listen", LOCAL, "--json")
        await meshchat(
            "add", "--profile", ann, (await meshchat("invite", "--profile", school)).stdout.decode()
        )
        asking = await start(
            "credential", "request", "School", "--type", "diploma", "--note", "class of 2026",
            "--wait", str(WAIT), "--listen", LOCAL, "--profile", ann, "--json",
        )  # fmt: skip
        requested = await asking.next("requested")
        assert (requested["issuer"], requested["vct"]) == ("School", "diploma")
        await school_node.stop()
        listed = await json_of("credential", "list", "--profile", school)
        assert [(r["vct"], r["note"]) for r in listed["requests"]] == [("diploma", "class of 2026")]
        # Ann's waiting node is in her new invite: the school dials her there
        await meshchat(
            "add", "--profile", school, (await meshchat("invite", "--profile", ann)).stdout.decode()
        )
        employer_node = await start("node", "--profile", employer, "--listen", LOCAL, "--json")
        employer_addr = (await employer_node.first("listening"))["addrs"][0]
        issued = await json_of(
            "credential", "issue", "--to", "Ann", "--type", "diploma", "--claim", "name=Ann Lee",
            "--claim", "degree=MSc", "--predicates-from-birth-date", "2001-04-02", "--days", "365",
            "--bootstrap", employer_addr, "--profile", school,
        )  # fmt: skip
        credential_id = issued["credential_id"]
        assert issued["claims"] == {
            "name": "Ann Lee",
            "degree": "MSc",
            "age_over_18": True,
            "age_over_21": True,
        }
        received = await asking.next("received")
        assert received["credential_id"] == credential_id
        with trio.fail_after(WAIT):
            await asking.process.wait()
        assert asking.process.returncode == 0
        held = (await json_of("credential", "list", "--profile", ann))["held"]
        assert [(h["credential_id"], h["vct"]) for h in held] == [(credential_id, "diploma")]

        qr = tmp_path / "diploma.png"
        shown = await json_of(
            "credential", "present", credential_id[:10], "--claim", "degree", "--one-way", "--qr", qr,
            "--profile", ann,
        )  # fmt: skip
        assert qr.read_bytes().startswith(b"\x89PNG") and shown["qr_text"].startswith("MCVP1:")
        assert "Ann Lee" not in shown["presentation"]
        verified = await _verify_until(employer, shown["presentation"], ok=True)
        assert (verified["issuer"], verified["claims"], verified["status"]) == (
            "Springfield",
            {"degree": "MSc"},
            "valid",
        )
        from_qr = await json_of("credential", "verify", shown["qr_text"], "--profile", employer)
        assert from_qr["credential_id"] == credential_id
        text = (await meshchat("credential", "verify", shown["presentation"], "--profile", employer)).stdout
        assert b"issued by Springfield" in text and b'degree: "MSc"' in text

        revoked = await json_of(
            "credential", "revoke", credential_id, "--bootstrap", employer_addr, "--profile", school
        )
        assert revoked["credential_id"] == credential_id and revoked["status_published_to"] >= 1
        again = await json_of(
            "credential", "present", credential_id, "--claim", "degree", "--one-way", "--profile", ann
        )
        failed = await _verify_until(employer, again["presentation"], ok=False)
        assert failed.returncode == 1 and failed.stdout == b""
        assert failed.stderr.decode().count("\n") == 1
        await employer_node.stop()
    school_list = await json_of("credential", "list", "--profile", school)
    assert [(i["credential_id"], i["to"], i["revoked"]) for i in school_list["issued"]] == [
        (credential_id, "Ann", True)
    ]
    usage = await meshchat("credential", "present", credential_id, "--profile", ann, check=False)
    assert usage.returncode == 2 and usage.stderr.decode().startswith("error: give --nonce")
    bad = await meshchat("credential", "verify", "MCVP1:%%%", "--profile", employer, check=False)
    assert bad.returncode == 1 and bad.stderr.decode().startswith("error: malformed QR payload")


async def test_a_status_list_handed_over_offline(tmp_path: Path) -> None:
    """An issuer's ``credential list --json`` prints its lists signed now; a verifier that is never
    online imports them (``credential import``), once; a token of an issuer it does not trust fails."""
    from meshchat.credential_api import open_wallet  # noqa: PLC0415
    from meshchat.credentials.status import StatusList, status_uri  # noqa: PLC0415
    from meshchat.identity import load_identity  # noqa: PLC0415

    school, employer = tmp_path / ".school", tmp_path / ".employer"
    for folder, name in ((school, "School"), (employer, "Employer")):
        await meshchat("init", "--profile", folder, "--name", name, "--insecure-no-passphrase")
    identity = load_identity(school / "identity.key", None)
    school_did = (await json_of("credential", "list", "--profile", school))["did"]
    with open_wallet(school, identity) as wallet:  # as `credential issue` leaves it
        wallet.put_status_list(
            status_uri(school_did, "1"), StatusList(status_uri(school_did, "1")).to_bytes(), now=0
        )
    [token] = (await json_of("credential", "list", "--profile", school))["status_tokens"]
    untrusted = await meshchat("credential", "import", token, "--profile", employer, check=False)
    assert untrusted.returncode == 1 and untrusted.stderr.decode().startswith("error: unknown issuer")
    await meshchat("credential", "trust", school_did, "--name", "School", "--profile", employer)
    (tmp_path / "tokens.txt").write_text(token + "\n")
    imported = await json_of("credential", "import", "--file", tmp_path / "tokens.txt", "--profile", employer)
    assert imported == {"imported": 1, "not_newer": 0}
    assert await json_of("credential", "import", token, "--profile", employer) == {
        "imported": 0,
        "not_newer": 1,
    }
    [issuer] = (await json_of("credential", "list", "--profile", employer))["trusted"]
    assert issuer["did"] == school_did and issuer["status_age"] is not None
    text = (await meshchat("credential", "list", "--profile", employer)).stdout.decode()
    assert "trusted School" in text and "s old" in text
    broken = await meshchat("credential", "import", "x.y.z", "--profile", employer, check=False)
    assert broken.returncode == 1 and broken.stderr.decode().count("\n") == 1
