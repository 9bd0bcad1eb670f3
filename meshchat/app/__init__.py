"""The local web app and the JSON-RPC daemon: a thin layer over ``meshchat.Node`` on 127.0.0.1.

``jsonrpc`` (JSON-RPC 2.0 messages and sessions), ``methods`` (the method table over one node),
``unix`` (the Unix-socket transport), ``web`` and ``server`` (the ASGI app: pages, static files and the
WebSocket transport, served by Hypercorn under trio), ``auth`` (tokens). No logic the library lacks.
"""
