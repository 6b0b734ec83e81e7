"""Corpus readers without Beam: Parquet, JSON Lines and plain text (each optionally compressed).

A ``CorpusFile`` -> ``FilePart``s -> ``Document``s and ``Rejection``s: the shared records and
line reading (``base``), decompression (``compression``), one reader per format (``jsonl``,
``parquet``, ``text``), and the dispatch by format with the checks every record passes
(``files``). Files are opened through a ``Storage``: the local disk unless the caller gives
another (the render job gives Beam's filesystems), so the readers import and run without Beam.
"""
