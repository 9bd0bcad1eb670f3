"""A school issues diplomas, an employer checks them offline, the school revokes one.

Four nodes on 127.0.0.1, profiles in a temporary folder: Springfield School, two graduates (Ann and
Ben) and an employer. Each graduate asks the school for a diploma (a control message carrying a
proof of possession of a key made for that one diploma); the school issues against each request;
the diplomas land in the graduates' wallets. The employer trusts the school and follows its status
list by gossip; each graduate shows only the degree, answering the employer's challenge, and the
employer checks it without asking anyone. Then the school revokes Ben's diploma: the new status list
reaches the employer by gossip, and the employer's next check of Ben's diploma fails with
``CredentialRevoked``, while Ann's still passes.

Run: python examples/diploma.py
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TypeVar

import trio

from meshchat import Identity, Node
from meshchat.credential_api import CredentialReceived, CredentialRequested, StatusReceived
from meshchat.errors import CredentialRevoked
from meshchat.identity import KEY_FILE_NAME, save_identity
from meshchat.store.messenger import StoreConfig
from meshchat.wire import Invite

LOCAL = ["/ip4/127.0.0.1/tcp/0"]
NAMES = ["School", "Ann", "Ben", "Employer"]
WAIT = 60.0  # seconds any one step may take before the example gives up (a slow CI machine)
FAST_RETRY = StoreConfig(retry_initial=0.5)  # resend unacknowledged control messages quickly
E = TypeVar("E")


async def next_event(node: Node, kind: type[E], wanted: Callable[[E], bool] = lambda _: True) -> E:
    """The next event of ``node`` of type ``kind`` for which ``wanted`` holds (others are skipped)."""
    with trio.fail_after(WAIT):
        async for event in node.events():
            if isinstance(event, kind) and wanted(event):
                return event
    raise AssertionError("unreachable")


def check(employer: Node, graduate: Node, name: str) -> str:
    """The employer challenges ``graduate``, who shows the degree only; the employer's verdict."""
    nonce = employer.credentials.challenge()
    [diploma] = graduate.credentials.held()
    shown = graduate.credentials.present(
        diploma.credential_id, ["degree"], nonce=nonce, audience=employer.credentials.did
    )
    try:
        verified = employer.credentials.verify(shown, nonce=nonce, require=["degree"])
    except CredentialRevoked as exc:
        return f"Employer refuses {name}'s diploma: CredentialRevoked: {exc}"
    age = verified.status_age or 0.0
    return (
        f"Employer accepts {name}'s {verified.vct} from {verified.issuer_name}: {verified.claims} "
        f"(status {verified.status}, list {age:.0f} s old; not disclosed: "
        f"{', '.join(sorted(diploma.claims.keys() - verified.claims.keys()))})"
    )


async def main(folder: Path) -> None:
    people = {name: Identity.generate() for name in NAMES}
    for name, identity in people.items():
        (folder / name).mkdir()
        save_identity(folder / name / KEY_FILE_NAME, identity, None)  # a real app asks for a passphrase
    async with AsyncExitStack() as stack:
        nodes: dict[str, Node] = {}
        for name in NAMES:
            opening = Node.open(folder / name, listen=LOCAL, dht=False, store_config=FAST_RETRY)
            nodes[name] = await stack.enter_async_context(opening)
        school, ann, ben, employer = (nodes[name] for name in NAMES)
        for name in ("Ann", "Ben"):  # the graduates and the school know each other
            invite = Invite.create(people["School"], name="School", addrs=school.listen_addrs)
            nodes[name].contacts.add(invite.to_text())
            invite = Invite.create(people[name], name=name, addrs=nodes[name].listen_addrs)
            school.contacts.add(invite.to_text())
        for node in (ann, ben, employer):
            await node.connect(school.listen_addrs[0])
        print(f"Springfield School's did: {school.credentials.did}")

        # the employer trusts the school: its node follows the school's status topic from now on
        employer.credentials.trust(school.credentials.did, "Springfield School")

        for graduate, name in ((ann, "Ann"), (ben, "Ben")):
            graduate.credentials.request("School", "diploma", note=f"{name}, class of 2026")
            requested = await next_event(school, CredentialRequested)
            print(f"School got a request from {name}: {requested.request.vct} ({requested.request.note})")
        degrees = {"Ann": ("Ann Lee", "MSc Physics", "A"), "Ben": ("Ben Okafor", "BSc Biology", "B+")}
        for graduate, name in ((ann, "Ann"), (ben, "Ben")):
            full_name, degree, grade = degrees[name]
            claims = {"name": full_name, "degree": degree, "grade": grade}
            credential, _ = school.credentials.issue(name, vct="diploma", claims=claims, valid_days=3650)
            received = await next_event(graduate, CredentialReceived)
            assert received.credential_id == credential.credential_id
            print(f"{name} holds diploma {received.credential_id}: {', '.join(claims)}")

        with trio.fail_after(WAIT):  # published to each new subscriber of the school's topic
            await employer.wait_for(
                lambda: employer.credentials.status_age(school.credentials.did) is not None
            )
        print("Employer has the school's status list")
        print(check(employer, ann, "Ann"))
        print(check(employer, ben, "Ben"))

        [bens] = ben.credentials.held()
        school.credentials.revoke(bens.credential_id)
        print(f"School revoked Ben's diploma {bens.credential_id}")
        verdict = ""
        with trio.fail_after(WAIT):
            while "refuses" not in verdict:  # until the list with Ben's bit set has arrived
                status = await next_event(employer, StatusReceived)
                verdict = check(employer, ben, "Ben")
        print(f"Employer got the new status list by gossip (signed at {status.issued_at:.0f})")
        print(verdict)
        print(check(employer, ann, "Ann"))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="meshchat-diploma-") as temporary:
        trio.run(main, Path(temporary))
