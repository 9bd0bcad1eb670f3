"""``python -m meshchat``: the same command as the ``meshchat`` console script."""

from __future__ import annotations

from meshchat.cli import main

if __name__ == "__main__":
    main()
