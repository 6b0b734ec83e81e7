"""One sample of a shard: how a rendered strip is stored, and read back.

One sample is one strip, its key ``<document key>_<strip index>`` (index zero-padded to 4
digits), with members:

==================  ==================================================================
``.png``            the strip up to and including its black end patch (the rest of the
                    strip is background, by definition); 8-bit greyscale when every pixel
                    is grey or the render config's ``color`` is one channel (gray,
                    binary), else 8-bit RGB; lossless, decodes to the exact pixels drawn
``.tokens.npy``     int32 [n]: token ids of exactly the text shown
``.align.npy``      int32 [n, 2]: first and last patch of each token
``.txt``            the text shown, UTF-8
``.json``           metadata: document, strip, strips, text_patches, missing_glyphs,
                    start (offset in the normalised document), chars, source, and
                    changed_chars (characters of the document that normalisation
                    removed or replaced)
==================  ==================================================================

Readers go through :func:`decode_sample`, which checks a sample against this schema, so that
a file from elsewhere can make no reader index out of range.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from zlib_ng import zlib_ng

from pixeltext_render.renderer import Strip

PNG, TOKENS, ALIGN, TEXT, META = "png", "tokens.npy", "align.npy", "txt", "json"
MEMBERS = (META, PNG, ALIGN, TOKENS, TEXT)
PNG_LEVEL = 3  # zlib-ng level: see `make bench` for the trade-off between speed and bytes
_SAFE_KEY = re.compile(r"[A-Za-z0-9_-]{1,80}")


def sample_key(document: str, strip: int) -> str:
    return f"{document}_{strip:04d}"


def is_safe_key(key: str) -> bool:
    """Keys go into tar member names: no dots (WebDataset splits there), no slashes."""
    return _SAFE_KEY.fullmatch(key) is not None


def key_hash(key: str) -> int:
    """A stable 64-bit number for a key (shard assignment, validation split): sha256's first 8 bytes."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def encode_png(image: np.ndarray, level: int = PNG_LEVEL) -> bytes:
    """A PNG of an 8-bit grey [H, W] or [H, W, 1] or RGB [H, W, 3] image: no row filter, one IDAT chunk.

    Text strips compress about as well without PNG's row filters, and skipping them makes
    encoding about twice as fast as Pillow's encoder; any PNG reader decodes the result. The
    deflate is zlib-ng's (a pinned wheel): 1.6x faster than the stdlib's zlib at level 3 and
    slightly smaller (`make bench`); its version is part of the render fingerprint.
    """
    height, width = image.shape[:2]
    colour_type = 2 if image.ndim == 3 and image.shape[2] == 3 else 0
    rows = np.zeros((height, 1 + image[0].size), np.uint8)  # filter byte 0 (None) per row
    rows[:, 1:] = image.reshape(height, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    idat = zlib_ng.compress(rows.tobytes(), level)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_strip(
    strip: Strip, document: str, index: int, count: int, source: str, patch_size: int, changed_chars: int = 0
) -> dict[str, bytes]:
    """The members of one sample (without the key), deterministic bytes. ``changed_chars``:
    the document's characters that normalisation removed or replaced."""
    stored = strip.image[:, : (strip.num_text_patches + 1) * patch_size]
    meta = {
        "document": document,
        "strip": index,
        "strips": count,
        "text_patches": strip.num_text_patches,
        "missing_glyphs": strip.missing_glyphs,
        "start": strip.start,
        "chars": len(strip.text),
        "source": source,
        "changed_chars": changed_chars,
    }
    return {
        META: json.dumps(meta, sort_keys=True, ensure_ascii=False).encode(),
        PNG: encode_png(stored),  # (it copies rows into its own buffer: a view is fine)
        ALIGN: _npy(strip.token_patches.astype(np.int32, copy=False)),
        TOKENS: _npy(strip.token_ids.astype(np.int32, copy=False)),
        TEXT: strip.text.encode("utf-8", "surrogatepass"),
    }


@dataclass
class StoredStrip:
    """A sample read back: pixels as stored (end patch included), tokens, alignment, text."""

    key: str
    pixels: np.ndarray  # uint8 [H, (text_patches + 1) * patch_size, channels of the shards' colour mode]
    token_ids: np.ndarray  # int32 [n]
    token_patches: np.ndarray  # int32 [n, 2]
    text: str
    meta: dict[str, Any]

    @property
    def num_text_patches(self) -> int:
        return int(self.meta["text_patches"])


class InvalidSample(ValueError):
    """A sample that does not follow the schema; the message says what is wrong."""


_META_FIELDS = {
    "document": str,
    "strip": int,
    "strips": int,
    "text_patches": int,
    "missing_glyphs": int,
    "start": int,
    "chars": int,
    "source": str,
}


def read_meta(sample: dict[str, Any]) -> dict[str, Any]:
    """A sample's ``.json`` metadata, checked: an object with the schema's fields and types."""
    if META not in sample:
        raise InvalidSample(f"no .{META} member")
    meta = json_object(sample[META], f".{META}", InvalidSample)
    for name, kind in _META_FIELDS.items():
        value = meta.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            raise InvalidSample(
                f".{META} field {name!r} is {value!r}, not a {'count' if kind is int else 'string'}"
            )
        if kind is str and not is_unicode(value):
            raise InvalidSample(f".{META} field {name!r} is not valid Unicode (a lone surrogate)")
    return meta


def json_object(data: bytes, what: str, error: type[ValueError]) -> dict[str, Any]:
    """A JSON object from a file the reader did not write, or ``error`` saying why not (bad
    JSON, too deeply nested, not an object)."""
    try:
        value = json.loads(data)
    except (ValueError, TypeError, RecursionError) as problem:
        raise error(f"{what} is not valid JSON: {type(problem).__name__}: {problem}") from None
    if not isinstance(value, dict):
        raise error(f"{what} is not a JSON object")
    return value


def is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def decode_sample(
    sample: dict[str, Any], patch_size: int | None = None, vocab_size: int | None = None, channels: int = 3
) -> StoredStrip:
    """Decode a WebDataset sample (``{"__key__": ..., "png": bytes, ...}``) without pickle,
    checked against the schema: every member present, the image ``patch_size`` high and as
    wide as its text patches plus the end patch, one alignment row per token, alignments within
    the text patches, token ids below ``vocab_size``. Raises :class:`InvalidSample`.

    ``channels`` are those of the shards' render config (``RenderConfig.channels``; a PNG
    alone cannot tell a rgb strip stored grey from a gray one): 3, and a grey PNG is repeated
    into RGB; 1, and the PNG must be grey."""
    missing = [name for name in MEMBERS if name not in sample]
    if missing:
        raise InvalidSample(f"missing member(s) {', '.join('.' + m for m in missing)}")
    meta = read_meta(sample)
    patches = meta["text_patches"]
    try:
        with Image.open(io.BytesIO(sample[PNG])) as png:
            width, height = png.size  # from the header: checked before anything is decoded
            if png.mode not in ("L", "RGB"):
                raise InvalidSample(f"image mode {png.mode}, not 8-bit grey or RGB")
            if channels == 1 and png.mode != "L":
                raise InvalidSample(f"image mode {png.mode}: the shards are one channel (8-bit grey)")
            if patch_size is not None and (height, width) != (patch_size, (patches + 1) * patch_size):
                raise InvalidSample(
                    f"image is {height}x{width} pixels; {patches} text patches and the end patch of "
                    f"{patch_size} pixels make {patch_size}x{(patches + 1) * patch_size}"
                )
            image = np.asarray(png)
        token_ids, token_patches = _load_npy(sample[TOKENS]), _load_npy(sample[ALIGN])
        text = sample[TEXT].decode("utf-8", "surrogatepass")
    except InvalidSample:
        raise
    except Exception as error:  # PIL, numpy and codecs each raise their own kinds
        raise InvalidSample(f"undecodable member: {error!r}") from None
    if token_ids.ndim != 1 or token_ids.dtype.kind not in "iu":
        raise InvalidSample(f".{TOKENS} is {token_ids.dtype} {token_ids.shape}, not integer ids [n]")
    if token_patches.shape != (len(token_ids), 2) or token_patches.dtype.kind not in "iu":
        raise InvalidSample(
            f".{ALIGN} is {token_patches.dtype} {token_patches.shape}, not integers [{len(token_ids)}, 2] "
            "(one row per token)"
        )
    if len(token_ids):
        if token_ids.min() < 0 or (vocab_size is not None and token_ids.max() >= vocab_size):
            raise InvalidSample(
                f"token ids span {token_ids.min()}..{token_ids.max()}, outside the vocabulary of {vocab_size}"
            )
        last = max(patches - 1, 0)
        if (
            token_patches.min() < 0
            or token_patches.max() > last
            or (token_patches[:, 0] > token_patches[:, 1]).any()
        ):
            raise InvalidSample(f".{ALIGN} has a patch range outside the {patches} text patches")
    if len(text) != meta["chars"]:
        raise InvalidSample(f".{TEXT} has {len(text)} characters, the metadata says {meta['chars']}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2) if channels == 3 else image[..., None]
    return StoredStrip(sample["__key__"], image, token_ids, token_patches, text, meta)
