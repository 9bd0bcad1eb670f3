"""Alice sends Bob a photo with a caption; Bob sees its thumbnail first, then fetches the photo itself.

Two nodes on 127.0.0.1 in one process. The manifest (name, type, size, a JPEG thumbnail, the photo's
size in pixels, the caption, the file key) travels sealed inside an ordinary message; the photo's
encrypted chunks are fetched from Alice, each checked against its address before it is written to
Bob's downloads folder.

Run: python examples/send_photo.py
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import trio
from PIL import Image

from meshchat import Identity, Node
from meshchat.files.events import Attachment
from meshchat.media import sample_photo
from meshchat.net.file_driver import FileConfig


async def main() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    local = ["/ip4/127.0.0.1/tcp/0"]
    with tempfile.TemporaryDirectory() as scratch:
        photo = sample_photo(Path(scratch) / "lake.jpg")
        # Bob fetches by hand (auto_fetch=0), so the example shows the step; by default a node fetches
        # anything up to 16 MiB as soon as the manifest arrives.
        bob_files = FileConfig(auto_fetch=0, downloads=Path(scratch) / "bob-downloads")
        async with (
            Node.open(identity=bob, listen=local, file_config=bob_files) as b,
            Node.open(identity=alice, listen=local) as a,
        ):
            await a.connect(b.listen_addrs[0])
            # Wait (at most 10 s) until Alice has heard that Bob listens on his inbox shard.
            with trio.fail_after(10):
                await a.wait_for(lambda: b.peer_id in a.driver.router.topic_peers(b.inbox_topic()))
            handle = await a.send_file(bob.public, photo, caption="The lake this morning 🌅")
            with trio.fail_after(10):
                async for event in b.events():
                    if isinstance(event, Attachment):
                        break
            m = event.manifest
            thumb = Image.open(io.BytesIO(m.thumbnail))
            print(f"Bob got an attachment from Alice: {event.sender == alice.public}")
            print(f"name: {m.name}, type: {m.mime}, size: {m.size:,} bytes, {m.width}x{m.height} px")
            print(f"thumbnail: {len(m.thumbnail):,} bytes, {thumb.width}x{thumb.height} px")
            print(f"caption: {m.caption}")
            with trio.fail_after(20):
                path = await b.fetch(event)
            data = await trio.Path(path).read_bytes()
            same = data == await trio.Path(photo).read_bytes()
            print(f"fetched {len(data):,} bytes, identical to Alice's photo: {same}")
            print(f"saved as {path.name} in Bob's downloads folder: {path.parent == bob_files.downloads}")
            progress = handle.progress
            assert progress is not None
            print(f"Alice served {progress.fetched:,} of {progress.total:,} bytes")


if __name__ == "__main__":
    trio.run(main)
