"""Files and attachments (sans-IO core): chunks, manifests, the download plan, the chunk protocol's
messages, and the profile's file store (``files.db``). The network half is ``meshchat.net.file_driver``;
``node.files`` is the user's API (``meshchat.file_api``). Design: README "Files"."""
