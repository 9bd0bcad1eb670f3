"""The JSON-RPC methods over ``node.groups``, ``node.files``, ``node.credentials``, ``node.documents``."""

from __future__ import annotations

from meshchat.app.params import Method

__all__ = ["MORE_METHODS"]

#: The table rows of this module (``meshchat.app.methods.METHODS`` ends with them).
MORE_METHODS: tuple[Method, ...] = ()
