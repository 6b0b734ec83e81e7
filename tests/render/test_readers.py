"""The corpus readers need no Beam: with ``apache_beam`` unimportable they import and read each
format (JSON Lines, Parquet, plain text, compressed too) from the local disk."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

# Loaded at interpreter start (sitecustomize): importing Beam fails as where it is not installed
BLOCKER = """
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "apache_beam":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, Absent())
"""
# Each file given on the command line, read whole: its documents as (source, key, text)
READ = """
import json, os, sys

from pixeltext_render.job.readers.base import ReadOptions
from pixeltext_render.job.readers.files import ParseFile, corpus_file, corpus_folder, file_parts

paths = sys.argv[1:]
folder = corpus_folder(paths)
parse = ParseFile(ReadOptions())
found = [
    (record.source, record.key, record.text)
    for path in paths
    for part in file_parts(corpus_file(path, os.path.getsize(path), None, folder), ReadOptions())
    for record in parse.process(part)
]
assert "apache_beam" not in sys.modules
print(json.dumps(found))
"""


def test_the_readers_read_every_format_without_beam(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [{"id": "j1", "text": "A JSON line."}, {"id": "j2", "text": "Another."}]
    (corpus / "a.jsonl.gz").write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in lines).encode()))
    table = pa.table({"id": ["p1", "p2", "p3"], "text": ["Row one.", "Row two.", "Row three."]})
    pq.write_table(table, corpus / "b.parquet", row_group_size=2)
    (corpus / "c.txt").write_text("A whole file is one document.\nEven with two lines.", encoding="utf-8")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]),
    }
    probe = subprocess.run([sys.executable, "-c", "import apache_beam"], env=env, capture_output=True)
    assert probe.returncode != 0
    paths = [str(corpus / name) for name in ("a.jsonl.gz", "b.parquet", "c.txt")]
    done = subprocess.run([sys.executable, "-c", READ, *paths], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    found = [tuple(record) for record in json.loads(done.stdout)]
    assert [(source, text) for source, _, text in found] == [
        ("a.jsonl.gz:1", "A JSON line."),
        ("a.jsonl.gz:2", "Another."),
        ("b.parquet:1", "Row one."),
        ("b.parquet:2", "Row two."),
        ("b.parquet:3", "Row three."),
        ("c.txt:1", "A whole file is one document.\nEven with two lines."),
    ]
    assert [key for _, key, _ in found[:5]] == ["j1", "j2", "p1", "p2", "p3"]
    assert found[5][1].startswith("src-")  # no id: a hash of the source
