"""The render job: corpus files to sharded WebDataset tars with Apache Beam (the ``job`` extra).

The corpus readers (``readers``, which need no Beam), Beam's filesystems (``filesystems``), the
first pass's survey (``survey``), the plan (``planning``), the pipeline (``pipeline``), writing
shards and the manifest (``shards``), Dask (``dask_cluster``), and the sample corpora it renders
by default (``corpora``). Nothing outside this package imports Beam: training and evaluation
need only the renderer, the tokenizers and the shard format.
"""
