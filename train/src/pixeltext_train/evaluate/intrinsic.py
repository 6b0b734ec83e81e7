"""Intrinsic evaluation on held-out documents of the shards: next-token loss (and bits per
byte of the text it covers) and next-patch loss, each sequence as in pre-training."""

from __future__ import annotations

import json
import math
from typing import Any

import torch
from tqdm import tqdm
from webdataset import tariterators

from pixeltext_render.schema import META, decode_sample
from pixeltext_train.data import (
    collate,
    is_validation,
    make_sequence,
    read_manifest,
    shard_urls,
)
from pixeltext_train.evaluate.backbone import Backbone, sequence_spec
from pixeltext_train.losses import next_patch_loss, next_token_loss, patch_targets, token_targets


def held_out_strips(shards: str, val_fraction: float, limit: int):
    urls = shard_urls(shards, read_manifest(shards))
    count = 0
    for sample in tariterators.tarfile_samples({"url": url} for url in urls):
        if is_validation(json.loads(sample[META])["document"], val_fraction):
            yield decode_sample(sample)
            count += 1
            if count >= limit:
                return


def intrinsic(
    backbone: Backbone, shards: str, val_fraction: float = 0.05, max_strips: int = 200
) -> dict[str, Any]:
    """Mean next-token loss (nats), bits per UTF-8 byte, and mean next-patch loss."""
    model, tokenizer = backbone.model.eval(), backbone.renderer.tokenizer
    spec = sequence_spec(backbone, model.config.max_positions)
    token_nats = patch_sum = 0.0
    tokens = patches = text_bytes = strips = 0
    for stored in tqdm(
        held_out_strips(shards, val_fraction, max_strips), desc="held-out strips", unit=" strips"
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
                    loss, count = next_patch_loss(hidden, model.patch_head, batch.patches, where)
                    patch_sum, patches = patch_sum + loss.item() * count, patches + count
    return {
        "strips": strips,
        "token_loss": token_nats / tokens if tokens else math.nan,
        "bits_per_byte": token_nats / math.log(2) / text_bytes if text_bytes else math.nan,
        "patch_loss": patch_sum / patches if patches else math.nan,
        "tokens": tokens,
        "patches": patches,
    }
