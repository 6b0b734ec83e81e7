"""Tokenisers that report, for every token, the characters of the text it covers.

Spans are what tie tokens to pixels: the renderer knows where each character is drawn,
so a token's span gives the patches it occupies.

Specs accepted by :func:`load_tokenizer`:
- ``"bytes"``: UTF-8 bytes, no files needed (ids 0-255, then bos, eos, pad);
- ``"sentencepiece"`` (default): the 32k SentencePiece BPE of Llama 2's design that
  ``make install`` fetches; ``"sentencepiece:/path/tokenizer.model"`` for another model,
  such as Llama 2's own;
- ``"hf:/path/tokenizer.json"``: any Hugging Face ``tokenizers`` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pixeltext_render.assets import asset_path, file_sha256
from pixeltext_render.config import fingerprint

DEFAULT_TOKENIZER = "sentencepiece"


@dataclass(frozen=True)
class Encoding:
    """Token ids and, per token, the half-open character span ``[start, end)`` it covers."""

    ids: np.ndarray  # int32 [n]
    spans: np.ndarray  # int32 [n, 2]

    def __len__(self) -> int:
        return len(self.ids)

    def clean_breaks(self) -> np.ndarray:
        """Token indices ``i`` where the text can be cut before token ``i``.

        A cut there must not split any token's characters: every earlier token ends at or
        before token ``i``'s start. (Byte-fallback tokens of one character share it, so no
        cut falls between them.)
        """
        if len(self.ids) == 0:
            return np.zeros(0, np.int64)
        ends_before = np.maximum.accumulate(self.spans[:, 1])
        ok = np.ones(len(self.ids), bool)
        ok[1:] = ends_before[:-1] <= self.spans[1:, 0]
        ok[0] = False
        return np.flatnonzero(ok)


class Tokenizer(Protocol):
    spec: str
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None

    @property
    def fingerprint(self) -> str: ...

    def encode(self, text: str) -> Encoding: ...

    def decode(self, ids: np.ndarray | list[int]) -> str: ...


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _utf8_lengths(text: str) -> np.ndarray:
    codes = _codepoints(text)
    return 1 + (codes >= 0x80).astype(np.int64) + (codes >= 0x800) + (codes >= 0x10000)


def _byte_to_char_spans(text: str, byte_spans: np.ndarray) -> np.ndarray:
    """Convert UTF-8 byte spans to character spans (a partial character counts whole)."""
    starts_of_chars = np.concatenate([[0], np.cumsum(_utf8_lengths(text))])
    begin = np.searchsorted(starts_of_chars, byte_spans[:, 0], side="right") - 1
    end = np.searchsorted(starts_of_chars, byte_spans[:, 1], side="left")
    end = np.maximum(end, begin)
    return np.stack([begin, end], axis=1).astype(np.int32).reshape(-1, 2)


class ByteTokenizer:
    """UTF-8 bytes as tokens: 256 ids, then ``<bos>`` 256, ``<eos>`` 257, ``<pad>`` 258."""

    spec = "bytes"
    vocab_size = 259
    bos_id, eos_id, pad_id = 256, 257, 258

    @property
    def fingerprint(self) -> str:
        return fingerprint({"tokenizer": "bytes"})

    def encode(self, text: str) -> Encoding:
        data = text.encode("utf-8", "surrogatepass")
        lengths = _utf8_lengths(text)
        chars = np.repeat(np.arange(len(text), dtype=np.int32), lengths)
        return Encoding(
            np.frombuffer(data, dtype=np.uint8).astype(np.int32),
            np.stack([chars, chars + 1], axis=1).reshape(-1, 2),
        )

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if 0 <= i < 256).decode("utf-8", "replace")


class SentencePieceTokenizer:
    """A SentencePiece model; spans come from the byte offsets SentencePiece reports."""

    def __init__(self, path: Path, spec: str):
        import sentencepiece

        self.spec = spec
        self.path = path
        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
        self.vocab_size = self._sp.vocab_size()
        self.bos_id, self.eos_id, self.pad_id = (
            i if i >= 0 else None for i in (self._sp.bos_id(), self._sp.eos_id(), self._sp.pad_id())
        )
        # Bytes of text each piece stands for ("\u2581" is a space, "<0xNN>" one byte), so
        # spans follow from ids alone; the model's dummy prefix adds one leading space.
        sp, ids = self._sp, list(range(self.vocab_size))  # (SentencePiece answers for a list at once)
        text_bytes = [len(piece.replace("\u2581", " ").encode("utf-8")) for piece in sp.id_to_piece(ids)]
        byte, control, unknown = (np.array(f(ids), bool) for f in (sp.is_byte, sp.is_control, sp.is_unknown))
        self._piece_bytes = np.where(byte, 1, np.where(control | unknown, 0, text_bytes)).astype(np.int64)
        self._prefix_bytes = int(self._piece_bytes[self._sp.encode("a")].sum()) - 1

    @cached_property  # hashes the model file: once
    def fingerprint(self) -> str:
        return fingerprint({"tokenizer": "sentencepiece", "sha256": file_sha256(self.path)})

    def encode(self, text: str) -> Encoding:
        ids = np.asarray(self._sp.encode(text), dtype=np.int32)
        lengths = self._piece_bytes[ids]
        total = len(text.encode("utf-8", "surrogatepass"))
        if lengths.sum() != total + self._prefix_bytes:  # unknown pieces: ask for offsets
            return self._encode_with_offsets(text)
        ends = np.cumsum(lengths) - self._prefix_bytes
        byte_spans = np.stack([np.maximum(ends - lengths, 0), np.maximum(ends, 0)], axis=1)
        return Encoding(ids, _byte_to_char_spans(text, byte_spans))

    def _encode_with_offsets(self, text: str) -> Encoding:
        proto = self._sp.encode(text, out_type="proto")
        count = len(proto.pieces)
        ids = np.fromiter((p.id for p in proto.pieces), np.int32, count)
        byte_spans = np.fromiter(
            (b for p in proto.pieces for b in (p.begin, p.end)), np.int64, 2 * count
        ).reshape(-1, 2)
        return Encoding(ids, _byte_to_char_spans(text, byte_spans))

    def decode(self, ids) -> str:
        return self._sp.decode([int(i) for i in ids])


class HFTokenizer:
    """A Hugging Face ``tokenizer.json``; spans are its character offsets."""

    def __init__(self, path: Path, spec: str):
        import tokenizers

        self.spec = spec
        self.path = path
        self._tok = tokenizers.Tokenizer.from_file(str(path))
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        vocab = self._tok.get_vocab(with_added_tokens=True)
        self.bos_id = next((vocab[t] for t in ("<s>", "<bos>", "<|begin_of_text|>") if t in vocab), None)
        self.eos_id = next(
            (vocab[t] for t in ("</s>", "<eos>", "<|endoftext|>", "<|end_of_text|>") if t in vocab), None
        )
        self.pad_id = next((vocab[t] for t in ("<pad>", "[PAD]") if t in vocab), None)

    @cached_property  # hashes the model file: once
    def fingerprint(self) -> str:
        return fingerprint({"tokenizer": "hf", "sha256": file_sha256(self.path)})

    def encode(self, text: str) -> Encoding:
        encoded = self._tok.encode(text, add_special_tokens=False)
        spans = np.array(encoded.offsets, dtype=np.int32).reshape(-1, 2)
        return Encoding(np.array(encoded.ids, dtype=np.int32), spans)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)


def tokenizer_record(tokenizer: Tokenizer) -> dict[str, Any]:
    """What a manifest or a checkpoint records of a tokenizer, so readers rebuild and check it."""
    return {
        "spec": tokenizer.spec,
        "fingerprint": tokenizer.fingerprint,
        "vocab_size": tokenizer.vocab_size,
        "bos_id": tokenizer.bos_id,
        "eos_id": tokenizer.eos_id,
        "pad_id": tokenizer.pad_id,
    }


def load_tokenizer(spec: str = DEFAULT_TOKENIZER) -> Tokenizer:
    """Build a tokenizer from its spec (see the module docstring)."""
    kind, _, location = spec.partition(":")
    if kind == "bytes" and not location:
        return ByteTokenizer()
    if kind == "sentencepiece":
        path = Path(location).expanduser() if location else asset_path("tokenizers/llama2-design-32k.model")
        return SentencePieceTokenizer(_existing(path, spec), spec)
    if kind == "hf" and location:
        return HFTokenizer(_existing(Path(location).expanduser(), spec), spec)
    raise ValueError(
        f"unknown tokenizer {spec!r}: use 'bytes', 'sentencepiece', "
        "'sentencepiece:/path/tokenizer.model' or 'hf:/path/tokenizer.json'"
    )


def _existing(path: Path, spec: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer {spec!r}: no file at {path}")
    return path
