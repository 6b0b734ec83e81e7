"""``make bench`` (training): the decoder against transformers' Llama, and the data loader.

1. One training step (forward, backward, AdamW) of ``model=small`` on CPU, text only, against
   ``transformers.LlamaForCausalLM`` of the same shape, same batch, same loss, same run.
2. The data loader, one worker: strips per second from the default shards into batches
   (``pixel_text`` regimen, paper geometry), against what one H100 consumes training
   ``model=paper`` at 40% of its bf16 peak; hence the workers one GPU needs.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from pixeltext_render.corpora import default_corpus
from pixeltext_render.pipeline import RenderJob, run
from pixeltext_train.data import Regimen, ShardDataModule, StripSequences
from pixeltext_train.model import ModelConfig, PixelTextModel

REPO = Path(__file__).resolve().parents[1]
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
        step()  # warm-up
    for round_ in range(rounds):
        for name, step in list(steps.items())[:: 1 if round_ % 2 else -1]:
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def step_benchmark(batch: int = 4, length: int = 256, rounds: int = 10) -> tuple[float, float]:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = model_config("small", 32000)
    torch.manual_seed(0)
    ours = PixelTextModel(config)
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

    def loss_of(logits: torch.Tensor) -> torch.Tensor:  # the same loss for both models
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())

    ours_optimizer, theirs_optimizer = (
        torch.optim.AdamW(ours.parameters()),
        torch.optim.AdamW(theirs.parameters()),
    )

    def ours_step():
        ours_optimizer.zero_grad()
        loss_of(ours.lm_head(ours(tokens[:, :-1]))).backward()
        ours_optimizer.step()

    def theirs_step():
        theirs_optimizer.zero_grad()
        loss_of(theirs(input_ids=tokens[:, :-1]).logits).backward()
        theirs_optimizer.step()

    positions = batch * (length - 1)
    seconds = time_alternating({"ours": ours_step, "theirs": theirs_step}, rounds)
    return positions / seconds["ours"], positions / seconds["theirs"]


def loader_benchmark(batches: int = 40) -> tuple[float, float]:
    """(strips/s, patches/s) for one loader worker over the default corpus's shards."""
    shards = REPO / "outputs" / "bench" / "shards"
    if not (shards / "manifest.json").exists():
        run(RenderJob((str(default_corpus()),), str(shards)), workers=2, progress=False)
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
    ours, theirs = step_benchmark()
    with torch.device("meta"):  # the paper model, only for its FLOPs
        paper = PixelTextModel(model_config("paper", 32000))
    flops = paper.flops_per_position(1024)
    gpu_positions = H100_BF16_PEAK * UTILISATION / flops
    strips, patches = loader_benchmark()
    per_strip = patches / strips
    threads = torch.get_num_threads()
    print(f"\ntraining step, model=small, CPU ({threads} threads), text, batch 4 x 255 positions")
    print(f"  pixeltext            {ours:10.0f} positions/s")
    print(f"  transformers Llama   {theirs:10.0f} positions/s   ratio {ours / theirs:.2f}")
    print("\ndata loader, one worker, pixel_text regimen, paper geometry")
    print(
        f"  {strips:.0f} strips/s = {patches:,.0f} patches/s (+ tokens), {per_strip:.0f} patches per sequence"
    )
    print(
        f"  model=paper: {flops / 1e9:.2f} GFLOP per position; one H100 at 40% of "
        f"{H100_BF16_PEAK / 1e12:.0f} TFLOP/s trains {gpu_positions:,.0f} positions/s"
    )
    print(f"  => about {gpu_positions / patches:.1f} loader workers per H100 (counting patches only)")
    out = REPO / "outputs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").write_text(
        json.dumps(
            {
                "step_positions_per_s": {"pixeltext": ours, "transformers": theirs},
                "loader": {"strips_per_s": strips, "patches_per_s": patches},
                "paper_flops_per_position": flops,
                "h100_positions_per_s_at_40pct": gpu_positions,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
