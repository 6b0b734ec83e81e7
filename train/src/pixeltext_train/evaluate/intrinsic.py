"""Intrinsic evaluation on held-out documents of the shards: next-token loss (and bits per
byte of the text it covers) and next-patch loss, each sequence as in pre-training."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from tqdm import tqdm

from pixeltext_render.format.sample import InvalidSample, StoredStrip, decode_sample
from pixeltext_train.data.batches import collate
from pixeltext_train.data.sequences import is_validation, make_sequence
from pixeltext_train.data.stream import ErrorBudget, SampleStream
from pixeltext_train.evaluate.backbone import Backbone, check_fingerprints, sequence_spec
from pixeltext_train.losses import next_patch_loss, next_token_loss, patch_targets, token_targets
from pixeltext_train.storage import read_manifest, shard_records, shard_urls


def held_out_strips(
    backbone: Backbone, shards: str, val_fraction: float, limit: int, budget: ErrorBudget
) -> Iterator[StoredStrip]:
    """Up to ``limit`` strips of the held-out documents, in file order, checked against the
    schema (a corrupt sample or shard is counted in ``budget`` and skipped). The shards must
    have been made by the backbone's renderer and tokenizer."""
    manifest = read_manifest(shards)
    check_fingerprints(
        manifest, backbone.renderer, f"the shards at {shards}", f"checkpoint {backbone.source}"
    )
    samples = SampleStream(
        shard_urls(shards, manifest),
        reader=0,
        readers=1,
        keep=lambda meta: is_validation(meta["document"], val_fraction),
        budget=budget,
        training=False,
        records=shard_records(shards, manifest),
    )
    count, config = 0, backbone.renderer.config
    for sample in samples:
        try:
            yield decode_sample(sample, config.patch_size, backbone.model.config.vocab_size, config.channels)
        except InvalidSample as error:
            budget(f"sample {sample['__key__']} of {sample['__url__']}", error)
            continue
        count += 1
        if count >= limit:
            return


def intrinsic(
    backbone: Backbone, shards: str, val_fraction: float = 0.05, max_strips: int = 200, max_errors: int = 100
) -> dict[str, Any]:
    """Mean next-token loss (nats), bits per UTF-8 byte, and mean next-patch loss; corrupt
    samples are counted (``skipped_samples``), up to ``max_errors``."""
    model, tokenizer = backbone.model.eval(), backbone.renderer.tokenizer
    spec = sequence_spec(backbone, model.config.max_positions)
    token_nats = patch_sum = 0.0
    tokens = patches = text_bytes = strips = 0
    budget = ErrorBudget(max_errors)
    for stored in tqdm(
        held_out_strips(backbone, shards, val_fraction, max_strips, budget),
        desc="held-out strips",
        unit=" strips",
    ):
        strips += 1
        for kind in ("text", "pixel"):
            batch = collate([(kind, *make_sequence(stored, kind, spec))], spec)
            with torch.no_grad():
                hidden = model(batch.tokens, batch.patches, batch.is_patch)
                if kind == "text":
                    where = token_targets(batch.tokens, batch.is_patch, batch.real, backbone.bos_id)
                    loss, count = next_token_loss(hidden, model.lm_head, batch.tokens, where)
                    token_nats, tokens = token_nats + loss.item() * count, tokens + count
                    spans = tokenizer.encode(stored.text).spans
                    covered = int(spans[count - 1, 1]) if count else 0
                    text_bytes += len(stored.text[:covered].encode("utf-8"))
                else:
                    where = patch_targets(batch.is_patch, batch.real)
                    loss, count = next_patch_loss(
                        hidden, model.patch_head, batch.patches, where, model.config.patch_loss
                    )
                    patch_sum, patches = patch_sum + loss.item() * count, patches + count
    return {
        "strips": strips,
        "token_loss": token_nats / tokens if tokens else math.nan,
        "bits_per_byte": token_nats / math.log(2) / text_bytes if text_bytes else math.nan,
        "patch_loss": patch_sum / patches if patches else math.nan,
        "tokens": tokens,
        "patches": patches,
        "skipped_samples": budget.count,
    }
