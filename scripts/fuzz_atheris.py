"""Coverage-guided fuzzing of one ``scripts/fuzz.py`` target with atheris (libFuzzer), when installed.

Usage: ``python scripts/fuzz_atheris.py NAME [libFuzzer flags, e.g. -max_total_time=300 CORPUS_DIR]``.

atheris is not a meshchat dependency: install it in a throwaway venv (``pip install atheris``; 3.0.0
has Python 3.11 wheels) and run this with ``PYTHONPATH`` naming the worktree and meshchat's
site-packages. The seeds of ``NAME`` are written to the corpus directory first (if it is empty). An
untyped exception stops libFuzzer with a crash file (its reproducer); so does an accepted forgery
(``AssertionError``). ``scripts/fuzz.py`` is the deterministic run for every decoder and CI; this one
follows coverage into the branches a blind mutator reaches rarely.
"""

from __future__ import annotations

import os
import sys

import atheris  # type: ignore[import-not-found]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

with atheris.instrument_imports(include=["meshchat"]):
    from fuzz_targets import Target, build_targets


def main() -> None:
    name = sys.argv.pop(1)
    target: Target = build_targets()[name]
    corpus = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    if corpus is not None:
        os.makedirs(corpus, exist_ok=True)
        if not os.listdir(corpus):
            for i, seed in enumerate(target.seeds):
                with open(os.path.join(corpus, f"seed{i}"), "wb") as out:
                    out.write(seed)

    def one(data: bytes) -> None:
        try:
            content = target.check(data)
        except target.typed:
            return
        if not target.signed or data in target.seeds or content in target.seed_contents:
            return
        if not (target.items and content <= frozenset().union(*target.seed_contents)):  # type: ignore[operator]
            raise AssertionError(f"forgery accepted by {name}: {data.hex()}")

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
