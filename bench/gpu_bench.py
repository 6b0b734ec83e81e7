"""``make bench-gpu``: the training step and decoding on one GPU, for the models of ``conf/model/``.

Needs only PyTorch and ``train/src/pixeltext_train/model.py`` and ``losses.py`` (no Lightning,
Hydra, Beam or fonts: a GPU machine often has none of them): synthetic batches of the real
shapes (rows of ``max_positions``; packed rows hold sequences of random lengths, as pixel,
text and pair sequences from a corpus would), bf16 autocast, AdamW. For each model, packed and
not, compiled and not: step time, real positions per second, model FLOPs utilisation against
the device's peak, peak memory, and the largest micro-batch (rows) that fits. Then decoding
(``generate.py``) with weights in the benchmark's dtype: ``--decode-new`` greedy tokens after a
prompt of as many, and as many patches after as many patches, for each ``--decode-batches``, with
the cache eager and with a static cache and compiled blocks: tokens and patches per second, and
whether the compiled run gives the eager run's tokens.

    PYTHONPATH=train/src python bench/gpu_bench.py                 # small and paper, everything
    PYTHONPATH=train/src python bench/gpu_bench.py --models paper --attention mask flex
    PYTHONPATH=train/src python bench/gpu_bench.py --device cpu --models tiny --steps 1 --no-search
    PYTHONPATH=train/src python bench/gpu_bench.py --models paper --no-train   # decoding only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from pixeltext_train.generate import Prompt, generate_patches, generate_tokens, pixel_prompt
from pixeltext_train.losses import next_patch_loss, next_token_loss, targets
from pixeltext_train.model import ModelConfig, Packing, PixelTextModel

REPO = Path(__file__).resolve().parents[1]
PEAK_BF16_TFLOPS = {"H100 SXM": 989, "H100 NVL": 835, "H100 PCIe": 756, "H100": 989, "H200": 989, "A100": 312}


def model_config(name: str) -> ModelConfig:
    """A ``conf/model/<name>.yaml`` (flat ``key: value`` lines) with the default 32k vocabulary."""
    values = {}
    for line in (REPO / "conf" / "model" / f"{name}.yaml").read_text().splitlines():
        key, _, value = line.split("#", 1)[0].partition(":")
        if value.strip():
            values[key.strip()] = float(value) if "." in value or "e" in value else int(value)
    return ModelConfig(vocab_size=32000, **values)


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None)


def synthetic_batch(config: ModelConfig, rows: int, packed: bool, device: torch.device, seed: int = 0):
    """Rows of ``max_positions``: one sequence each, or packed with sequences of 64..max
    positions (half pixel patches then text, as a pair; the rest text), the tail padded."""
    g = torch.Generator().manual_seed(seed)
    width, dim = config.max_positions, config.patch_dim
    tokens = torch.randint(3, config.vocab_size, (rows, width), generator=g)
    patches = torch.randint(0, 256, (rows, width, dim), generator=g, dtype=torch.uint8)
    positions = torch.zeros(rows, width, dtype=torch.long)
    segments = torch.full((rows, width), -1, dtype=torch.long)
    is_patch = torch.zeros(rows, width, dtype=torch.bool)
    count = 0
    for row in range(rows):
        at = 0
        while at < width:
            size = width if not packed else int(torch.randint(64, width + 1, (1,), generator=g))
            if size > width - at:  # (a packer fills the rest with a shorter sequence when it has one)
                if width - at < 64:
                    break  # the tail stays padding
                size = int(torch.randint(32, width - at + 1, (1,), generator=g))
            positions[row, at : at + size] = torch.arange(size)
            segments[row, at : at + size] = count
            is_patch[row, at : at + size // 2] = True
            tokens[row, at + size // 2] = 1  # bos between the patches and the text
            count, at = count + 1, at + size
    real = segments >= 0
    tokens[~real] = 0
    batch = SimpleNamespace(
        tokens=tokens.to(device),
        patches=patches.to(device),
        is_patch=is_patch.to(device),
        real=real.to(device),
        packing=Packing(positions.to(device), segments.to(device)) if packed else None,
        kinds=torch.zeros(count, dtype=torch.long),
    )
    return batch, torch.bincount(segments[real])


def step_function(model: PixelTextModel, optimizer, batch, dtype: torch.dtype):
    where_patch, where_token = targets(batch, bos_id=1)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(batch.tokens.device.type, dtype=dtype, enabled=dtype != torch.float32):
            hidden = model(batch.tokens, batch.patches, batch.is_patch, batch.packing)
            loss = next_patch_loss(hidden, model.patch_head, batch.patches, where_patch)[0]
            loss = loss + next_token_loss(hidden, model.lm_head, batch.tokens, where_token)[0]
        loss.backward()
        optimizer.step()

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(config: ModelConfig, rows: int, packed: bool, compiled: bool, args, device) -> dict:
    torch.manual_seed(0)
    model = PixelTextModel(config).to(device)
    if compiled:
        for block in model.layers:
            block.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    batch, lengths = synthetic_batch(config, rows, packed, device)
    step = step_function(model, optimizer, batch, args.dtype)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    synchronize(device)
    seconds = (time.perf_counter() - start) / args.steps
    real = int(lengths.sum())
    peak = peak_flops(device, args.peak_tflops)
    flops = model.training_flops(lengths)
    return {
        "step_s": seconds,
        "real_positions_per_s": real / seconds,
        "padding_fraction": 1 - real / (rows * config.max_positions),
        "tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / peak if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    }


def fits(config: ModelConfig, rows: int, packed: bool, compiled: bool, args, device) -> bool:
    try:
        measure(
            config,
            rows,
            packed,
            compiled,
            argparse.Namespace(**{**vars(args), "steps": 1, "warmup": 1}),
            device,
        )
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        torch.cuda.empty_cache()


def largest_batch(config: ModelConfig, packed: bool, compiled: bool, args, device, limit: int = 1024) -> int:
    """The most rows that train without running out of memory (doubling, then bisecting)."""
    low, high = 0, 1
    while high <= limit and fits(config, high, packed, compiled, args, device):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(config, middle, packed, compiled, args, device) else (low, middle)
    return low


def decode(config: ModelConfig, batch: int, compiled: bool, args, device) -> dict:
    """Tokens and patches per second of greedy decoding (``--decode-new`` after as many)."""
    torch.manual_seed(0)
    model = PixelTextModel(config).to(device=device, dtype=args.dtype).eval()
    if compiled:
        for block in model.layers:
            block.compile()
    count = args.decode_new
    rng = np.random.default_rng(batch)
    texts = [Prompt(rng.integers(3, config.vocab_size, count)) for _ in range(batch)]
    pictures = [
        pixel_prompt(rng.integers(0, 256, (count, config.patch_dim), dtype=np.uint8)) for _ in range(batch)
    ]
    rates, tokens = {}, None
    for name, run in (
        ("tokens_per_s", lambda: generate_tokens(model, texts, count, static_cache=compiled)),
        ("patches_per_s", lambda: generate_patches(model, pictures, count, static_cache=compiled)),
    ):
        made = run()  # warm-up (and, compiled, the compilation)
        synchronize(device)
        start = time.perf_counter()
        made = run()
        synchronize(device)
        rates[name] = batch * count / (time.perf_counter() - start)
        tokens = tokens if tokens is not None else [m.tokens.tolist() for m in made]
    return rates | {"tokens": tokens}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["small", "paper"])
    parser.add_argument("--rows", type=int, default=8, help="rows of max_positions per micro-batch")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--attention", nargs="+", default=["mask", "flex"], help="packed rows' kernels")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--peak-tflops", type=float, help="the device's peak (default: known GPUs' bf16)")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-search", action="store_true", help="skip the largest-micro-batch search")
    parser.add_argument("--no-train", action="store_true", help="decoding only")
    parser.add_argument("--decode-batches", type=int, nargs="*", default=[1, 32], help="none: no decoding")
    parser.add_argument("--decode-new", type=int, default=128, help="new tokens or patches, after as many")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "gpu.json")
    args = parser.parse_args()
    args.dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; {args.dtype}; {args.rows} rows a micro-batch")
    results, decoding = [], []
    for model_name in [] if args.no_train else args.models:
        for packed, attention in [(False, "causal")] + [(True, a) for a in args.attention]:
            for compiled in [False] if args.no_compile else [False, True]:
                config = model_config(model_name)
                config.attention = attention if packed else "auto"
                row = {"model": model_name, "packed": packed, "attention": attention, "compiled": compiled}
                try:
                    row |= measure(config, args.rows, packed, compiled, args, device)
                    if not args.no_search:
                        row["largest_rows"] = largest_batch(config, packed, compiled, args, device)
                except Exception as error:  # a kernel this machine cannot run: say so and go on
                    row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                results.append(row)
                print(json.dumps(row))
    for model_name in args.models:
        for batch in args.decode_batches:
            eager = None
            for compiled in [False] if args.no_compile else [False, True]:
                row = {"decode": model_name, "batch": batch, "compiled": compiled}
                try:
                    measured = decode(model_config(model_name), batch, compiled, args, device)
                    eager = eager or measured["tokens"]
                    row |= {k: v for k, v in measured.items() if k != "tokens"}
                    row["same_tokens_as_eager"] = measured["tokens"] == eager
                except Exception as error:  # (as above)
                    row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
                decoding.append(row)
                print(json.dumps(row))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"device": name, "torch": torch.__version__, "results": results, "decoding": decoding}
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
