"""The paper's own rendered GLUE and XNLI (``baidu/rendered_GLUE``, ``baidu/rendered_xnli`` on
Hugging Face), so that its checkpoints are fine-tuned on the very pixels they were fine-tuned on
(``eval/run.py rendered=official``).

The layout, as the official fine-tuning scripts read it (ernie-research/pixelgpt:
``scripts/training/run_ernie-pixel_glue.py``, ``run_ernie-pixel_glue_pair.py``,
``run_ernie_xnli_translate_train_*.py`` and the ``run/`` shell scripts): a folder per split,
``<task>-<split>/part-00000.gz`` (MNLI: ``mnli-validation_matched``, ``mnli-validation_mismatched``;
XNLI: ``xnli-<lang>-<split>``), read as JSON Lines (``load_dataset("json")``), one object per
example with the task's text fields (Hugging Face's GLUE and XNLI names: ``sentence1``,
``premise``...), ``label`` (the class id, or STS-B's score) and the strip: ``image``, base64 of an
image file opened with PIL and converted to RGB, and ``num_patches``, the text patches before
the black end patch the official model pools on (its attention covers ``num_patches + 1``).
The official renderer draws black on white (grey unless told ``rgb``), 16-pixel patches, the end
patch black. Bad rows are skipped and counted; an image is checked before it is decoded (base64, a
PNG, its size, its checksums: :func:`image_problem`) and decoded only when it is shown.
"""

from __future__ import annotations

import binascii
import gzip
import io
import logging
import math
import tarfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
from PIL import Image

from pixeltext_render.raster import convert_color
from pixeltext_train.evaluate.tasks import (
    GLUE,
    NLI_LABELS,
    Example,
    ExampleStore,
    StoredImage,
    Task,
    TaskError,
    json_objects,
    xnli_languages,
    xnli_task,
)

log = logging.getLogger(__name__)

RENDERED = ("ours", "official")  # ``rendered=``: render the task's text, or the paper's pixels
MAX_PATCHES = 8192  # the widest image a row may hold (8 x the paper's 1024-patch strips), in patches
FORMATS = ("PNG",)  # the only image format decoded: lossless, and what a rendered strip is saved as


@dataclass(frozen=True)
class RenderedSpec:
    text: str
    pair: str | None
    labels: list[str]  # Hugging Face's class names, in label-id order; empty: a regression (STS-B)
    scored: tuple[str, ...] = ("validation",)  # GLUE's test labels are hidden: the dev sets are scored


RENDERED_GLUE = {  # text fields: the official scripts' task_to_keys; classes: Hugging Face's glue
    "cola": RenderedSpec("sentence", None, ["unacceptable", "acceptable"]),
    "sst2": RenderedSpec("sentence", None, ["negative", "positive"]),
    "mrpc": RenderedSpec("sentence1", "sentence2", ["not_equivalent", "equivalent"]),
    "qqp": RenderedSpec("question1", "question2", ["not_duplicate", "duplicate"]),
    "stsb": RenderedSpec("sentence1", "sentence2", []),
    "mnli": RenderedSpec(
        "premise", "hypothesis", NLI_LABELS, ("validation_matched", "validation_mismatched")
    ),
    "qnli": RenderedSpec("question", "sentence", ["entailment", "not_entailment"]),
    "rte": RenderedSpec("sentence1", "sentence2", ["entailment", "not_entailment"]),
    "wnli": RenderedSpec("sentence1", "sentence2", ["not_entailment", "entailment"]),
}
RENDERED_XNLI = RenderedSpec("premise", "hypothesis", NLI_LABELS, ("validation", "test"))


@dataclass(frozen=True)
class PaperStrip:
    """A stored image as ``data.sequences.strip_patches`` reads a strip: uint8 pixels in the
    checkpoint's colour mode, whole patches only, and the text patches before the end patch (as
    many as the image holds)."""

    pixels: np.ndarray  # uint8 [patch_size, patches * patch_size, channels]
    num_text_patches: int


def image_problem(data: str, patch_size: int) -> str | None:
    """Why a row's image cannot be shown (None: it can): checked without decoding its pixels
    (base64, a PNG, ``patch_size`` pixels high, 1 to ``MAX_PATCHES`` patches wide, its chunks'
    checksums), so that a task of any size is checked in seconds and no row makes us decode a
    picture of any size."""
    try:
        raw = binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        return "image that is not base64"
    try:
        with Image.open(io.BytesIO(raw), formats=FORMATS) as image:
            width, height = image.size
            if height != patch_size:
                return f"image not {patch_size} pixels high"
            if not patch_size <= width <= MAX_PATCHES * patch_size:
                return f"image not 1 to {MAX_PATCHES} patches wide"
            image.verify()
    except Image.UnidentifiedImageError:
        return "image that is not a PNG"
    except Image.DecompressionBombError:  # (a header claiming a picture of millions of pixels)
        return f"image not 1 to {MAX_PATCHES} patches wide"
    except (OSError, SyntaxError, ValueError, zlib.error):  # (PIL reports a broken chunk as SyntaxError)
        return "image that cannot be decoded"
    return None


def paper_strip(image: StoredImage, patch_size: int, color: str = "rgb") -> PaperStrip:
    """The pixels of a stored image, converted as the official loader converts them
    (``convert("RGB")``: a grey value v becomes (v, v, v)), then into the checkpoint's colour
    mode (the official ``render_mode`` conversions: ``convert_color``), cropped to whole patches."""
    try:
        with Image.open(io.BytesIO(binascii.a2b_base64(image.data)), formats=FORMATS) as opened:
            pixels = convert_color(np.asarray(opened.convert("RGB")), color)
    except (OSError, SyntaxError, ValueError, zlib.error) as error:
        raise ValueError(f"a stored image that passed its checks cannot be decoded: {error}") from None
    if pixels.shape[0] != patch_size:
        raise ValueError(
            f"the stored images are {pixels.shape[0]} pixels high and this checkpoint's patches "
            f"{patch_size}: rendered=official needs a checkpoint with {pixels.shape[0]}-pixel patches"
        )
    patches = pixels.shape[1] // patch_size
    return PaperStrip(pixels[:, : patches * patch_size], min(image.text_patches, patches))


class _Release:
    """The released files: an extracted folder (split folders anywhere under it) or the tar."""

    def __init__(self, root: Path, release: str):
        self.root, self.release = root, release
        self._tar: tarfile.TarFile | None = None
        if root.is_dir():
            names = [str(path) for path in root.rglob("part-*.gz") if path.is_file()]
        elif root.is_file() and tarfile.is_tarfile(root):
            self._tar = tarfile.open(root)  # noqa: SIM115 (open while the task is read: __exit__)
            names = [m.name for m in self._tar.getmembers() if m.isfile()]
        else:
            raise TaskError(
                f"data_dir={root} is not a folder or a tar file: point it at the extracted {release}"
            )
        self._parts: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for name in names:
            path = PurePosixPath(name) if self._tar else Path(name)
            if path.name.startswith("part-") and path.name.endswith(".gz"):
                self._parts[path.parent.name][str(path.parent)].append(name)

    def __enter__(self) -> _Release:
        return self

    def __exit__(self, *exception: object) -> None:
        if self._tar is not None:
            self._tar.close()

    def parts(self, split: str) -> list[str]:
        """The part files of a split folder, in order; an error if there is none, or two copies."""
        folders = self._parts.get(split, {})
        if not folders:
            raise TaskError(
                f"data_dir {self.root} has no {split}/part-*.gz: point data_dir at the extracted "
                f"{self.release} folder (or its .tar)"
            )
        if len(folders) > 1:
            raise TaskError(
                f"data_dir {self.root} holds {split} twice ({', '.join(sorted(folders))}): keep one"
            )
        return sorted(next(iter(folders.values())))

    @contextmanager
    def lines(self, name: str) -> Iterator[IO[bytes]]:
        """A part file's lines, gunzipped if it is gzip (a part named ``.gz`` may be plain text)."""
        with self._tar.extractfile(name) if self._tar else open(name, "rb") as handle:
            yield gzip.GzipFile(fileobj=handle) if handle.peek(2)[:2] == b"\x1f\x8b" else handle


def _example(row: dict[str, Any], spec: RenderedSpec, patch_size: int) -> Example | str:
    """The row as an example that shows its stored image, or why it cannot be one."""
    texts = [row.get(spec.text), row.get(spec.pair) if spec.pair else None]
    for field, text in zip((spec.text, spec.pair), texts, strict=True):
        if field and not isinstance(text, str):
            return f"missing {field}"
    label = row.get("label")
    if isinstance(label, bool) or not isinstance(label, int | float) or not math.isfinite(label):
        return "missing or unknown label"
    if spec.labels and (label != int(label) or not 0 <= label < len(spec.labels)):
        return "missing or unknown label"  # (GLUE's unlabelled rows are -1)
    patches, data = row.get("num_patches"), row.get("image")
    if isinstance(patches, bool) or not isinstance(patches, int) or patches < 0:
        return "missing or invalid num_patches"
    if not isinstance(data, str):
        return "missing image"
    problem = image_problem(data, patch_size)
    if problem:
        return problem
    value = float(label) if not spec.labels else int(label)
    return Example(texts[0], texts[1], value, StoredImage(data, patches))


def _read(
    release: _Release,
    split: str,
    spec: RenderedSpec,
    patch_size: int,
    reasons: Counter,
    examples: ExampleStore,
) -> ExampleStore:
    """``examples`` with a split's usable examples added; the other rows are counted in ``reasons``."""
    before = len(examples)
    for name in release.parts(split):
        with release.lines(name) as lines:
            try:
                for row in json_objects(lines, reasons):
                    example = _example(row, spec, patch_size)
                    if isinstance(example, str):
                        reasons[example] += 1
                    else:
                        examples.append(example)
            except (OSError, EOFError, zlib.error) as error:  # a cut-off or corrupt gzip stream
                log.warning("%s: %s; its rows from there on are not read", name, error)
                reasons["part file cut off or corrupt (its remaining rows)"] += 1
    if len(examples) == before:
        raise TaskError(f"{split} in {release.root} has no usable row (skipped: {dict(reasons) or 'none'})")
    return examples


def check_rendered(task: str, rendered: str) -> None:
    """Refuse a ``rendered=`` the task cannot take, before a checkpoint is loaded for it."""
    if rendered not in RENDERED:
        raise TaskError(f"rendered must be {' or '.join(RENDERED)}, got {rendered!r}")
    if rendered == "official" and task not in (*RENDERED_GLUE, "xnli"):
        raise TaskError(
            f"rendered=official is the paper's rendered GLUE and XNLI, for fine-tuning on their "
            f"tasks (task=rte, ..., task=xnli); task={task} has no such release"
        )


def rendered_task(name: str, options: Mapping[str, Any], patch_size: int = 16) -> Task:
    """Task ``name`` (a GLUE task or ``xnli``) from the paper's rendered release at
    ``options["data_dir"]`` (``xnli_setting`` and ``languages`` as for ``task=xnli``), each
    example carrying its stored image; images not ``patch_size`` pixels high are bad rows."""
    check_rendered(name, "official")
    release = "rendered_xnli" if name == "xnli" else "rendered_GLUE"
    if not options.get("data_dir"):
        raise TaskError(f"rendered=official needs data_dir=<the extracted {release} folder, or its .tar>")
    reasons: Counter = Counter()
    with _Release(Path(options["data_dir"]), release) as files:
        if name == "xnli":
            trained, scored = xnli_languages(
                options.get("xnli_setting") or "english", options.get("languages")
            )
            train = ExampleStore()
            for language in trained:
                _read(files, f"xnli-{language}-train", RENDERED_XNLI, patch_size, reasons, train)
            evaluations = {
                f"{split}/{language}": _read(
                    files, f"xnli-{language}-{split}", RENDERED_XNLI, patch_size, reasons, ExampleStore()
                )
                for split in RENDERED_XNLI.scored
                for language in scored
            }
            return xnli_task(train, evaluations, reasons)
        spec = RENDERED_GLUE[name]
        train = _read(files, f"{name}-train", spec, patch_size, reasons, ExampleStore())
        evaluations = {
            split: _read(files, f"{name}-{split}", spec, patch_size, reasons, ExampleStore())
            for split in spec.scored
        }
    return Task(
        name,
        not spec.labels,
        spec.labels,
        GLUE[name].metrics,
        train,
        evaluations,
        sum(reasons.values()),
        dict(reasons),
    )
