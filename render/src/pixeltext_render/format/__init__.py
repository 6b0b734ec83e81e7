"""The shard format: the one contract between the render job and everything that reads its
output (trainer, evaluation, anyone with ``webdataset`` or ``tarfile``).

- ``sample``: one strip's members, their encoding and checked decoding;
- ``tar``: samples into a deterministic tar, a tar stream back into samples;
- ``folder``: the names of a shard folder's files, its manifest and its index.

It works on bytes and file objects only: the job opens files through Beam's filesystems,
readers through fsspec, and neither spells a member or file name of its own.
"""
