"""``make bench`` (awkward inputs): the slowest documents of a random corpus of awkward text.

A seeded generator builds documents from segments that have broken renderers before: ZWJ
emoji chains, stacks of combining marks, right-to-left text with brackets, scripts without
spaces, very long words, runs of whitespace and control characters, variation selectors.
Each document is rendered with the default renderer (SentencePiece tokens); the table lists
the slowest by time per thousand characters, where a cliff (a quadratic path, a loop) shows.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from pixeltext_render import Renderer

SEGMENTS = {
    "zwj emoji chain": lambda r: "\U0001f600\u200d" * r.randint(1, 600),
    "combining marks": lambda r: "a" + "\u0301\u0323\u0308"[r.randint(0, 2)] * r.randint(1, 500),
    "hebrew with brackets": lambda r: " ".join("בב(גג) [דד]" for _ in range(r.randint(1, 200))),
    "arabic": lambda r: " ".join("مرحبا بالعالم" for _ in range(r.randint(1, 200))),
    "chinese, no spaces": lambda r: "".join(
        chr(r.randint(0x4E00, 0x9FA5)) for _ in range(r.randint(1, 3000))
    ),
    "thai, no spaces": lambda r: "ภาษาไทยไม่มีช่องว่าง" * r.randint(1, 150),
    "one long word": lambda r: "x" * r.randint(100, 20_000),
    "whitespace runs": lambda r: (" " * r.randint(1, 300) + "\n\t") * r.randint(1, 20),
    "control characters": lambda r: "".join(chr(r.randint(0, 31)) for _ in range(r.randint(1, 300))),
    "emoji with modifiers": lambda r: "\U0001f44d\U0001f3fd\ufe0f " * r.randint(1, 300),
    "devanagari": lambda r: "नमस्ते दुनिया क्षत्रिय " * r.randint(1, 150),
    "english": lambda r: "The quick brown fox jumps over the lazy dog. " * r.randint(1, 200),
}


def documents(count: int, seed: int) -> list[tuple[str, list[str]]]:
    """(text, the kinds of segment in it) for ``count`` documents of 1 to 6 segments."""
    generator = random.Random(seed)
    corpus = []
    for _ in range(count):
        kinds = generator.choices(list(SEGMENTS), k=generator.randint(1, 6))
        corpus.append(("".join(SEGMENTS[kind](generator) for kind in kinds), kinds))
    return corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=8)
    args = parser.parse_args()
    renderer = Renderer()
    rows = []
    for text, kinds in documents(args.documents, args.seed):
        start = time.perf_counter()
        rendered = renderer.render(text)
        seconds = time.perf_counter() - start
        rows.append((seconds, len(text), len(rendered.strips), kinds))
    per_k = [s / max(n, 1) * 1e6 for s, n, _, _ in rows]
    total_chars = sum(n for _, n, _, _ in rows)
    total_s = sum(s for s, _, _, _ in rows)
    print(f"\nawkward corpus: {len(rows)} documents, {total_chars:,} characters in {total_s:.1f} s")
    print(f"ms per 1,000 characters: median {statistics.median(per_k):.2f}, worst {max(per_k):.2f}")
    print(f"{'ms':>8}{'chars':>8}{'strips':>7}{'ms/1k chars':>13}  segments")
    slowest = sorted(range(len(rows)), key=lambda i: per_k[i], reverse=True)[: args.show]
    for i in slowest:
        seconds, chars, strips, kinds = rows[i]
        print(f"{seconds * 1e3:8.1f}{chars:8,}{strips:7}{per_k[i]:13.2f}  {', '.join(kinds)}")
    out = Path("outputs/bench")
    out.mkdir(parents=True, exist_ok=True)
    report = [{"ms": r[0] * 1e3, "chars": r[1], "strips": r[2], "segments": r[3]} for r in rows]
    (out / "fuzz.json").write_text(json.dumps(sorted(report, key=lambda r: -r["ms"]), indent=2))


if __name__ == "__main__":
    main()
