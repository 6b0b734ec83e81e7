"""``make bench`` (generation): decoding speed on the CPU, with the KV cache, without it, and
against ``transformers``.

1. Text: ``model=small`` (random weights, 32k vocabulary), greedy, 128 new tokens after a
   128-token prompt (up to 256 positions), batch 1 and 8: tokens per second with the cache,
   without it (the whole forward pass at every step), and ``LlamaForCausalLM.generate`` (sdpa)
   on the same weights exported with ``pixeltext_train.export``, same prompt; the three must
   give the same tokens. pixeltext decodes with ``for_cpu_decoding`` (oneDNN's matrix products),
   as ``task=generate`` and ``task=cloze`` do, with and without the cache alike.
2. Pixels: the same model, 128 new patches after a 128-patch prompt, batch 1 and 8: patches
   per second with the cache and without it (no patch statistics head, so no row stops early).

Each figure is the median of ``--rounds`` runs, the ways timed in alternation in one process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from pixeltext_train.export import export_checkpoint
from pixeltext_train.generate import Prompt, for_cpu_decoding, generate_patches, generate_tokens, pixel_prompt
from pixeltext_train.model import PixelTextModel
from pixeltext_train.module import PixelTextLM

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "outputs" / "bench"
PROMPT, NEW = 128, 128


def small_config() -> dict:
    return {**yaml.safe_load((REPO / "conf" / "model" / "small.yaml").read_text()), "vocab_size": 32000}


def median_seconds(ways: dict, rounds: int) -> dict[str, float]:
    """Median seconds of each way, alternating, the order reversed every round."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    for round_ in range(rounds):
        for name, way in list(ways.items())[:: 1 if round_ % 2 else -1]:
            start = time.perf_counter()
            way()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def text_benchmark(batch: int, rounds: int, llama, model: PixelTextModel) -> dict[str, float]:
    prompts = np.random.default_rng(batch).integers(3, 32000, (batch, PROMPT))
    outputs: dict[str, list] = {}

    def ours(cache: bool):
        def run():
            made = generate_tokens(model, [Prompt(p) for p in prompts], NEW, use_cache=cache)
            outputs[f"cache={cache}"] = [m.tokens.tolist() for m in made]

        return run

    def theirs():
        with torch.no_grad():
            made = llama.generate(
                torch.from_numpy(prompts),
                max_new_tokens=NEW,
                min_new_tokens=NEW,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
        outputs["transformers"] = made[:, PROMPT:].tolist()

    ways = {"cache": ours(True), "no cache": ours(False), "transformers": theirs}
    ways["cache"]()  # warm-up
    seconds = median_seconds(ways, rounds)
    same = outputs["cache=True"] == outputs["cache=False"] == outputs["transformers"]
    return {name: batch * NEW / s for name, s in seconds.items()} | {"same_tokens": same}


def pixel_benchmark(batch: int, rounds: int, model: PixelTextModel) -> dict[str, float]:
    rng = np.random.default_rng(batch)
    prompts = [
        pixel_prompt(rng.integers(0, 256, (PROMPT, model.config.patch_dim), dtype=np.uint8))
        for _ in range(batch)
    ]
    ways = {
        name: (lambda c=cache: generate_patches(model, prompts, NEW, use_cache=c))
        for name, cache in (("cache", True), ("no cache", False))
    }
    ways["cache"]()
    return {name: batch * NEW / s for name, s in median_seconds(ways, rounds).items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    module = PixelTextLM(model=small_config(), bos_id=1).eval()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "small.ckpt"
        torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, checkpoint)
        llama = LlamaForCausalLM.from_pretrained(
            export_checkpoint(checkpoint, Path(tmp) / "hf"), attn_implementation="sdpa"
        ).eval()
    results: dict[str, dict] = {}
    threads = torch.get_num_threads()
    print(f"\ngeneration, model=small, CPU ({threads} threads), greedy, {NEW} new after {PROMPT} positions")
    decoder = for_cpu_decoding(module.model)  # (what task=generate and task=cloze decode with)
    for batch in args.batches:
        text = text_benchmark(batch, args.rounds, llama, decoder)
        pixels = pixel_benchmark(batch, args.rounds, decoder)
        results[f"batch {batch}"] = {"text_tokens_per_s": text, "pixel_patches_per_s": pixels}
        print(f"  batch {batch}")
        versus = text["cache"] / text["transformers"], text["cache"] / text["no cache"]
        print(
            f"    text    cache {text['cache']:7.1f} tokens/s   no cache {text['no cache']:6.1f}   "
            f"transformers {text['transformers']:6.1f}   -> cache {versus[0]:.2f}x transformers, "
            f"{versus[1]:.1f}x no cache; same tokens: {text['same_tokens']}"
        )
        print(
            f"    pixels  cache {pixels['cache']:7.1f} patches/s  no cache {pixels['no cache']:6.1f}   "
            f"-> cache {pixels['cache'] / pixels['no cache']:.1f}x no cache"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "generate.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
