"""Packed rows: several sequences share a row, each exactly as it would be alone; split packing
cuts text and pixel sequences where a row ends, never pairs, and loses nothing."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import every_sample

import pixeltext_train.model as model_code
from pixeltext_train.data.batches import Part, RowSplitter, collate, collate_rows
from pixeltext_train.data.datamodule import ShardDataModule
from pixeltext_train.data.sequences import length
from pixeltext_train.data.stream import ResumePoint
from pixeltext_train.module import PixelTextLM
from pixeltext_train.resume import STREAM_STATE, differences

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


def split(data, sequences, width: int = 128):
    """The sequences split-packed into rows of ``width`` (as many rows as sequences: none is left
    over), as a batch, and its parts as ``(index of their sequence, part)`` in row order."""
    splitter = RowSplitter(len(sequences), width)
    for index, sequence in enumerate(sequences):
        splitter.add(Part(str(index), sequence, (0, 0, index)))
    assert not splitter.waiting
    rows = splitter.take()
    spec = type(data.spec)(width, data.spec.patch_size, data.spec.bos_id, data.spec.pad_id)
    batch = collate_rows([[part.sequence for part in row] for row in rows], spec)
    return batch, [(int(part.key), part.sequence) for row in rows for part in row]


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


def test_split_parts_have_the_losses_and_gradients_they_have_alone(sequences, module):
    """A cut sequence's parts are examples of their own: the recorder's per-example losses (one
    per part) are each part's loss alone, and the first part's context never reaches the rest."""
    data, chosen = sequences
    batch, parts = split(data, chosen)
    assert len(parts) > len(chosen)  # some sequences were cut
    packed_losses, packed_gradients = losses_and_gradients(module, batch)
    alone_losses, alone_gradients = losses_and_gradients(module, collate([p for _, p in parts], data.spec))
    torch.testing.assert_close(packed_losses, alone_losses, **KERNEL)
    for name, gradient in packed_gradients.items():
        torch.testing.assert_close(gradient, alone_gradients[name], **KERNEL, msg=name)
    assert ((batch.packing.positions == 0) & batch.real).sum() == len(parts)  # each part starts at 0


def test_split_parts_put_together_are_the_sequences_and_pairs_are_never_cut(sequences):
    data, chosen = sequences
    _, parts = split(data, chosen, width=100)
    assert len(parts) > len(chosen)
    for index, (kind, ids, patches) in enumerate(chosen):
        mine = [part for i, part in parts if i == index]
        assert {part[0] for part in mine} == {kind}
        if kind == "text":  # the rest continues the text: no bos of its own
            np.testing.assert_array_equal(np.concatenate([part[1] for part in mine]), ids)
            assert all(part[1][0] != data.spec.bos_id for part in mine[1:])
        elif kind == "pixel":
            np.testing.assert_array_equal(np.concatenate([part[2] for part in mine]), patches)
        else:  # whole: its tokens read all of its patches
            assert len(mine) == 1 and mine[0][1] is ids and mine[0][2] is patches


def positions_by_key(batches) -> Counter:
    """Each sequence's real positions over all batches, by its key (a cut one's parts summed)."""
    counts: Counter = Counter()
    for batch in batches:
        sizes = torch.bincount(batch.packing.segments[batch.real], minlength=len(batch.keys))
        for key, size in zip(batch.keys, sizes.tolist(), strict=True):
            counts[key] += size
    return counts


def test_split_batches_keep_every_position_once_and_pad_less(tiny_shards):
    options = {"batch_size": 4, "num_workers": 0, "max_positions": 128, "val_fraction": 0.9}
    whole, cut = (
        list(ShardDataModule(str(tiny_shards), packing=packing, **options)._dataset(training=False))
        for packing in ("whole", "split")
    )
    for batch in cut:
        real = batch.real.int()
        assert (real[:, 1:] <= real[:, :-1]).all()  # padding only at the tail of a row
        assert len(batch.keys) == len(batch.kinds) == int(batch.packing.segments.max()) + 1
    # every sequence's positions, its parts' summed: none lost, none twice
    assert positions_by_key(cut) == positions_by_key(whole)
    keys = [k for b in cut for k in b.keys]
    assert len(keys) > len(set(keys))  # sequences were cut...
    assert any(set(a.keys) & set(b.keys) for a, b in itertools.pairwise(cut))  # ...across batches too
    assert all(keys.count(k) == 1 for k in keys if k.endswith("/pair"))
    padding = [
        1 - float(torch.cat([b.real for b in batches[:-2]]).float().mean()) for batches in (whole, cut)
    ]
    assert padding[1] < padding[0] / 2  # (a one-pass stream's last batches hold its rest)


@pytest.mark.parametrize("packing", ["whole", "split"])
def test_a_packed_stream_resumed_after_any_batch_packs_on_exactly(tiny_shards, packing):
    """The parts waiting when a batch closes (a pair moved on, a cut sequence's rest) are in its
    resume state by address: a stream restored there makes the same next batches, bit for bit."""
    options = {"batch_size": 3, "num_workers": 0, "max_positions": 96, "shuffle_buffer": 16, "seed": 3}
    data = ShardDataModule(str(tiny_shards), packing=packing, **options)
    batches = list(itertools.islice(data._dataset(training=True), 40))  # into the second epoch
    waited = []
    for at, batch in enumerate(batches[:-2]):
        waited += batch.stream.state["waiting"]
        dataset = data._dataset(training=True)
        dataset.start = ResumePoint(at + 1, [batch.stream.state])
        for resumed, expected in zip(itertools.islice(dataset, 2), batches[at + 1 :], strict=False):
            assert resumed.keys == expected.keys, at
            for name in ("tokens", "patches", "real"):
                assert torch.equal(getattr(resumed, name), getattr(expected, name)), (at, name)
            assert torch.equal(resumed.packing.positions, expected.packing.positions), at
    assert batches[-1].stream.state["epoch"] >= 1
    assert waited  # batches closed with parts waiting
    if packing == "split":  # rests of cut sequences, and pairs moved on
        assert any(offset > 0 for *_, offset in waited)
        assert any(kind == "pair" for *_, kind, _ in waited)


def test_a_bad_packing_is_refused_and_true_still_means_whole(tiny_shards):
    with pytest.raises(ValueError, match=r"data\.packing must be one of none, whole, split"):
        ShardDataModule(str(tiny_shards), packing="yes")
    assert ShardDataModule(str(tiny_shards), packing=True).packing == "whole"
    saved = {"hyper_parameters": {"run": {"data.packing": True}}, STREAM_STATE: {}}
    assert differences(saved, {"data.packing": "whole"}) == []  # a run of packing: true resumes
    assert differences(saved, {"data.packing": "split"})
