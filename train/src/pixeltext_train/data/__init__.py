"""Streaming the render job's shards into batches of pixel, text and pair sequences.

    shards (a local folder or any fsspec URL: https, s3, gs; read in-process, see ``storage``)
    -> one stream per reader (rank x dataloader worker): its shards, or its samples of each
       shard when shards are fewer than readers; the other split passed over (``stream``)
    -> shuffled through a buffer, epoch after epoch
    -> decoded and checked against the schema (``pixeltext_render.format.sample``); a corrupt sample
       or unreadable shard is counted and skipped, not fatal (``dataset``)
    -> one sequence per strip, of a kind drawn by the regimen's ratios (``regimen``, ``sequences``):
         pixel: the strip's text patches          text: bos + its tokens
         pair:  its patches, bos, then the tokens of exactly the text in those patches
    -> batches, each carrying its reader's state (``batches``): packed, ``batch_size`` rows of
       ``max_positions`` that several sequences share, each in the first row it fits, padding
       only at the rows' tails; or one sequence per row, right-padded to the longest.

Resuming is exact: the data module (``datamodule``) keeps, for every reader, the state that came
with the last batch an optimizer step used (``StreamTracker``), and a checkpoint holds them all
(every rank's); a resumed run's readers continue from those states, so it trains on exactly the
batches an uninterrupted run would have, across epochs and whatever data was skipped.

Importers name the submodule; this package imports nothing, so that laying out inputs
(``sequences``, ``batches``) does not load Lightning's data module.
"""
