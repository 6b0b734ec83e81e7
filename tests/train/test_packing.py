"""Packed rows: several sequences share a row, each exactly as it would be alone."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import every_sample

import pixeltext_train.model as model_code
from pixeltext_train.data.batches import collate, collate_rows
from pixeltext_train.data.datamodule import ShardDataModule
from pixeltext_train.data.sequences import length
from pixeltext_train.module import PixelTextLM

from numerics import EFFECT, KERNEL

TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 176}


@pytest.fixture(scope="module")
def sequences(tiny_shards):
    """Real sequences of all three kinds from the tiny shards, short enough to share rows."""
    stream = every_sample(tiny_shards, regimen=(1, 1, 1), max_positions=96)
    chosen = []
    for batch in itertools.islice(stream, 40):
        row = batch.real[0]
        ids = batch.tokens[0, row][~batch.is_patch[0, row]].numpy()
        patches = batch.patches[0, row][batch.is_patch[0, row]].numpy()
        kind = ("pixel", "text", "pair")[int(batch.kinds[0])]
        chosen.append((kind, ids, patches if len(patches) else None))
    return stream, chosen[:9]


@pytest.fixture(scope="module")
def module(sequences):
    torch.manual_seed(0)
    data, _ = sequences
    return PixelTextLM(
        model={**TINY, "vocab_size": data.vocab_size, "max_positions": 256}, bos_id=data.spec.bos_id
    )


def packed(data, sequences, width: int = 256):
    """The sequences packed first-fit into rows of ``width``."""
    rows, free = [], []
    for sequence in sequences:
        size = length(sequence)
        row = next((r for r, room in enumerate(free) if size <= room), None)
        if row is None:
            rows.append([]), free.append(width)
            row = len(rows) - 1
        rows[row].append(sequence)
        free[row] -= size
    spec = type(data.spec)(width, data.spec.patch_size, data.spec.bos_id, data.spec.pad_id)
    return collate_rows(rows, spec), [s for row in rows for s in row]


def losses_and_gradients(module: PixelTextLM, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Each sequence's loss, and the gradients of their sum."""
    module.zero_grad()
    losses = module.example_losses(batch)
    losses.sum().backward()
    return losses.detach(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def test_packed_sequences_have_the_losses_and_gradients_they_have_alone(sequences, module):
    data, chosen = sequences
    batch, order = packed(data, chosen)
    assert batch.tokens.shape[0] < len(order)  # rows really hold several sequences
    packed_losses, packed_gradients = losses_and_gradients(module, batch)
    alone_losses, alone_gradients = losses_and_gradients(module, collate(order, data.spec))
    torch.testing.assert_close(packed_losses, alone_losses, **KERNEL)
    assert packed_gradients.keys() == alone_gradients.keys()
    for name, gradient in packed_gradients.items():
        torch.testing.assert_close(gradient, alone_gradients[name], **KERNEL, msg=name)
    assert packed_losses.std() > EFFECT  # the sequences' losses are their own, not one value


def test_no_sequence_sees_another_in_its_row(sequences, module):
    data, chosen = sequences
    batch, order = packed(data, chosen)
    segments = batch.packing.segments
    row = int(torch.bincount(torch.nonzero(segments >= 0)[:, 0]).argmax())  # the row with most sequences
    present = segments[row][segments[row] >= 0].unique()
    assert len(present) >= 2
    victim = int(present[0])
    changed = batch._replace(tokens=batch.tokens.clone(), patches=batch.patches.clone())
    where = segments == victim
    changed.tokens[where] = torch.where(changed.is_patch[where], 0, 7)
    changed.patches[where] = 255 - changed.patches[where]
    with torch.no_grad():
        a, b = module.hidden(batch), module.hidden(changed)
    others = (segments >= 0) & ~where
    torch.testing.assert_close(a[others], b[others], **KERNEL)
    assert (a[where] - b[where]).abs().max() > EFFECT
    assert ((batch.packing.positions == 0) & (segments >= 0)).sum() == len(order)  # each starts at 0


def test_the_flex_path_computes_what_the_dense_mask_does(sequences, module, monkeypatch):
    """CUDA's path (``flex_attention`` with a block mask) against the dense document mask, run
    forward only and uncompiled (a CPU has no flex backward)."""
    from torch.nn.attention.flex_attention import flex_attention

    data, chosen = sequences
    batch, _ = packed(data, chosen)
    monkeypatch.setattr(model_code, "_compiled_flex_attention", lambda: flex_attention)
    with torch.no_grad():
        dense = module.hidden(batch)
        monkeypatch.setattr(module.model.config, "attention", "flex")
        flex = module.hidden(batch)
    torch.testing.assert_close(flex[batch.real], dense[batch.real], **KERNEL)


def test_packed_batches_fill_rows_from_the_start_and_keep_every_sequence(tiny_shards):
    data = ShardDataModule(str(tiny_shards), batch_size=4, num_workers=0, max_positions=256, packing=True)
    unpacked = ShardDataModule(
        str(tiny_shards), batch_size=4, num_workers=0, max_positions=256, packing=False
    )
    batches = list(itertools.islice(data._dataset(training=False), 50))
    for batch in batches:
        real = batch.real.int()
        assert (real[:, 1:] <= real[:, :-1]).all()  # padding only at the tail of a row
        assert len(batch.keys) == len(batch.kinds) == int(batch.packing.segments.max()) + 1
        assert batch.tokens.shape[1] == 256
    keys = [k for b in batches for k in b.keys]
    plain = [k for b in unpacked._dataset(training=False) for k in b.keys]
    assert sorted(keys) == sorted(plain)  # the same sequences, none lost, none twice
    padding = 1 - sum(int(b.real.sum()) for b in batches) / sum(b.real.numel() for b in batches)
    plain_padding = 1 - sum(int(b.real.sum()) for b in unpacked._dataset(training=False)) / sum(
        b.real.numel() for b in unpacked._dataset(training=False)
    )
    assert padding < plain_padding
