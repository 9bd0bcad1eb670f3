"""Alice sends Bob a voice note; Bob sees how long it is, and his node fetches it on its own.

Two nodes on 127.0.0.1 in one process. The voice note is OGG/Opus (what phones record); the manifest
carries its duration, read from the container's headers by mutagen without decoding a sample. It is
small, so Bob's node fetches it as soon as the manifest arrives (``FileConfig.auto_fetch``, 16 MiB by
default) and says where it landed with an ``AttachmentFetched`` event.

Needs PyAV to encode the sample (the ``media`` extra: pip install 'meshchat[media]').

Run: python examples/voice_note.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio

from meshchat import Identity, Node
from meshchat.files.events import Attachment, AttachmentFetched
from meshchat.media import sample_voice_note
from meshchat.net.file_driver import FileConfig


async def main() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    local = ["/ip4/127.0.0.1/tcp/0"]
    with tempfile.TemporaryDirectory() as scratch:
        note = sample_voice_note(Path(scratch) / "voice note.ogg", seconds=4.0)
        bob_files = FileConfig(downloads=Path(scratch) / "bob-downloads")
        async with (
            Node.open(identity=bob, listen=local, file_config=bob_files) as b,
            Node.open(identity=alice, listen=local) as a,
        ):
            await a.connect(b.listen_addrs[0])
            # Wait (at most 10 s) until Alice has heard that Bob listens on his inbox shard.
            with trio.fail_after(10):
                await a.wait_for(lambda: b.peer_id in a.driver.router.topic_peers(b.inbox_topic()))
            await a.send_file(bob.public, note, caption="call me back?")
            fetched: AttachmentFetched | None = None
            with trio.fail_after(20):
                async for event in b.events():
                    if isinstance(event, Attachment):
                        m = event.manifest
                        print(f"Bob got a voice note from Alice: {event.sender == alice.public}")
                        print(f"name: {m.name}, type: {m.mime}, size: {m.size:,} bytes")
                        print(f"duration: {m.duration_ms / 1000:.1f} s, caption: {m.caption}")
                        print(f"fetching on its own (under the automatic size): {event.fetching}")
                    elif isinstance(event, AttachmentFetched):
                        fetched = event
                        break
            assert fetched is not None
            path = Path(fetched.path)
            data = await trio.Path(path).read_bytes()
            same = data == await trio.Path(note).read_bytes()
            print(f"fetched {len(data):,} bytes, identical to Alice's recording: {same}")
            print(f"saved as {path.name} in Bob's downloads folder: {path.parent == bob_files.downloads}")


if __name__ == "__main__":
    trio.run(main)
