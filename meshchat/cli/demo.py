"""``meshchat demo``: identities, invites, sealed messages and what a relay sees, in a temporary folder
(``meshchat.cli.demo_local``), then the same messages across four nodes on 127.0.0.1
(``meshchat.cli.demo_net``).

This module is the command and the demo's texts only; both halves are imported when it runs.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from meshchat.cli.common import (
    JsonOption,
    emit_json,
    load_profile_identity,
    quiet_libp2p,
    stdout_console,
)

__all__ = ["DEMO_MESSAGES", "DEMO_TIMING_ROUNDS", "Say", "demo", "silent"]

#: Seal/open round trips the demo times; enough for a stable figure, fast enough to finish at once.
DEMO_TIMING_ROUNDS = 200
#: What Alice sends Bob in the demo: (language, text). Non-Latin scripts and emoji on purpose.
DEMO_MESSAGES: tuple[tuple[str, str], ...] = (
    ("Russian", "Привет, Боб! Как дела?"),
    ("Tatar", "Сәлам, Боб! Хәлләр ничек? Җәй җитте!"),
    ("Chechen", "Ӏуьйре дика йойла, Боб! Муха ду хьал?"),  # noqa: RUF001 (Cyrillic on purpose)
    ("emoji", "🔐📨 сообщение дошло 🎉"),
)

#: Where the demo narrates: ``Console.print``, or nothing with ``--json``.
Say = Callable[..., None]


def demo(*, json_output: JsonOption = False) -> None:
    """Walk through identities, invites, sealed messages and what a relay sees, then send them across
    four nodes on 127.0.0.1 over TCP + Noise + yamux (everything in a temporary folder)."""
    import trio  # noqa: PLC0415

    from meshchat.cli.demo_local import run_demo  # noqa: PLC0415
    from meshchat.cli.demo_net import run_network_demo  # noqa: PLC0415 (py-libp2p: ~0.6 s to import)

    quiet_libp2p()

    console = None if json_output else stdout_console()
    with tempfile.TemporaryDirectory(prefix="meshchat-demo-") as workdir:
        summary = run_demo(Path(workdir), wall_now=time.time(), console=console)
        alice, bob = (load_profile_identity(Path(workdir) / name) for name in ("alice", "bob"))
        texts = [text for _, text in DEMO_MESSAGES]
        say: Say = console.print if console is not None else silent
        summary["network"] = trio.run(run_network_demo, alice, bob, texts, say)
    if json_output:
        emit_json(summary)


def silent(*_objects: object) -> None:
    """Narrate nothing (``--json``)."""
