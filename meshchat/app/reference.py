"""The method reference of docs/daemon.md, written from the method table (``methods.METHODS``).

docs/daemon.md holds it between ``REFERENCE_START`` and ``REFERENCE_END``; the tests check the file
against ``reference_markdown()`` (so no method goes undocumented and no example goes stale) and run
every example against real nodes. ``python -m meshchat.app.reference docs/daemon.md`` rewrites it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from meshchat.app.methods import METHODS
from meshchat.app.params import Method

__all__ = ["REFERENCE_END", "REFERENCE_START", "method_markdown", "reference_markdown", "update"]

REFERENCE_START = "<!-- methods: generated from meshchat/app/methods*.py; do not edit by hand -->"
REFERENCE_END = "<!-- end of methods -->"


def method_markdown(method: Method) -> str:
    """One method's section: what it does, its parameters, its result, an example."""
    lines = [f"### `{method.name}`", "", method.doc, ""]
    if method.params:
        lines += ["| parameter | type | required | meaning |", "|---|---|---|---|"]
        for param in method.params:
            required = "yes" if param.required else f"no (default `{json.dumps(param.default)}`)"
            lines.append(f"| `{param.name}` | {param.describe()} | {required} | {param.doc} |")
    else:
        lines.append("No parameters.")
    request = {"jsonrpc": "2.0", "id": 1, "method": method.name, "params": method.example.params}
    response = {"jsonrpc": "2.0", "id": 1, "result": method.example.result}
    lines += [
        "",
        f"Result: `{method.returns}`",
        "",
        "```json",
        json.dumps(request, ensure_ascii=False),
        json.dumps(response, ensure_ascii=False),
        "```",
        "",
    ]
    return "\n".join(lines)


def reference_markdown() -> str:
    """Every method's section, in table order, between the markers."""
    body = "\n".join(method_markdown(m) for m in METHODS)
    return f"{REFERENCE_START}\n\n{body}\n{REFERENCE_END}"


def update(path: Path) -> bool:
    """Rewrite the reference in the file at ``path``; True if it changed."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index(REFERENCE_START), text.index(REFERENCE_END) + len(REFERENCE_END)
    new = text[:start] + reference_markdown() + text[end:]
    path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    update(Path(sys.argv[1]))
