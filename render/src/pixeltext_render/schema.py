"""The shard sample schema: how a rendered strip is stored, and read back.

This module is the one contract between the render job and its readers (trainer, eval,
anyone with ``webdataset`` or ``tarfile``). One sample is one strip, its key
``<document key>_<strip index>`` (index zero-padded to 4 digits), with members:

==================  ==================================================================
``.png``            the strip up to and including its black end patch (the rest of the
                    strip is background, by definition); 8-bit greyscale when every pixel
                    is grey, else 8-bit RGB; lossless, decodes to the exact pixels drawn
``.tokens.npy``     int32 [n]: token ids of exactly the text shown
``.align.npy``      int32 [n, 2]: first and last patch of each token
``.txt``            the text shown, UTF-8
``.json``           metadata: document, strip, strips, text_patches, missing_glyphs,
                    start (offset in the normalised document), chars, source
==================  ==================================================================
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

from pixeltext_render.renderer import Strip

PNG, TOKENS, ALIGN, TEXT, META = "png", "tokens.npy", "align.npy", "txt", "json"
MEMBERS = (META, PNG, ALIGN, TOKENS, TEXT)
PNG_LEVEL = 3  # zlib level: see `make bench` for the trade-off between speed and bytes
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
    """A PNG of an 8-bit grey [H, W] or RGB [H, W, 3] image: no row filter, one IDAT chunk.

    Text strips compress about as well without PNG's row filters, and skipping them makes
    encoding about twice as fast as Pillow's encoder; any PNG reader decodes the result.
    """
    height, width = image.shape[:2]
    colour_type = 0 if image.ndim == 2 else 2
    rows = np.zeros((height, 1 + image[0].size), np.uint8)  # filter byte 0 (None) per row
    rows[:, 1:] = image.reshape(height, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    idat = zlib.compress(rows.tobytes(), level)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_strip(
    strip: Strip, document: str, index: int, count: int, source: str, patch_size: int
) -> dict[str, bytes]:
    """The members of one sample (without the key), deterministic bytes."""
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
    pixels: np.ndarray  # uint8 [H, (text_patches + 1) * patch_size, 3]
    token_ids: np.ndarray  # int32 [n]
    token_patches: np.ndarray  # int32 [n, 2]
    text: str
    meta: dict[str, Any]

    @property
    def num_text_patches(self) -> int:
        return int(self.meta["text_patches"])


def decode_sample(sample: dict[str, Any]) -> StoredStrip:
    """Decode a WebDataset sample (``{"__key__": ..., "png": bytes, ...}``) without pickle."""
    image = np.asarray(Image.open(io.BytesIO(sample[PNG])))
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return StoredStrip(
        key=sample["__key__"],
        pixels=image,
        token_ids=_load_npy(sample[TOKENS]),
        token_patches=_load_npy(sample[ALIGN]),
        text=sample[TEXT].decode("utf-8", "surrogatepass"),
        meta=json.loads(sample[META]),
    )
