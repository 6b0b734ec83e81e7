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

import re
from array import array
from dataclasses import dataclass
from functools import cached_property
from itertools import compress, repeat
from operator import is_
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


# Where a text can be cut into words that SentencePiece encodes one by one to the same ids: a
# space after a character other than a space or "\u2581", unless the text ends there. No piece
# of a plain model (``SentencePieceTokenizer._plain``) holds "\u2581" after another character,
# so no BPE merge spans such a space: the words on either side are merged as if alone. The
# space is dropped, the next word's dummy prefix standing for it.
_WORD_BREAK = re.compile(" (?<=[^ \u2581] )(?=.)", re.S)
_SPACE_INSIDE = re.compile("[^\u2581]\u2581")
# The ids of the words met are kept for up to this many words or characters, then all
# forgotten at once: a few tens of MB at most (73k words, 10 MB for the default corpus).
_CACHED_WORDS = 1 << 17
_CACHED_CHARS = 1 << 22
# A plain model's normaliser escapes spaces and adds the dummy prefix, and nothing else:
# checked on these (NFKC, extra-whitespace removal or spaces as suffixes would show).
_NORMALIZER_PROBES = (
    "  two  spaces\tand a tab\nand ",
    " x ",
    "\ufb01 \u2460 \uff26 e\u0301 \u00a8 \u2581 \u3000 \u0133",
)


class SentencePieceTokenizer:
    """A SentencePiece model; spans follow from the pieces' lengths. A plain model's texts
    are encoded word by word, each word once while it is remembered: SentencePiece's BPE is
    what tokenising costs (some 0.3 µs a character), and words repeat."""

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
        pieces = sp.id_to_piece(ids)
        text_bytes = [len(piece.replace("\u2581", " ").encode("utf-8")) for piece in pieces]
        byte, control, unknown = (np.array(f(ids), bool) for f in (sp.is_byte, sp.is_control, sp.is_unknown))
        ordinary = ~(byte | control | unknown)
        self._piece_bytes = np.where(byte, 1, np.where(ordinary, text_bytes, 0)).astype(np.int64)
        self._prefix_bytes = int(self._piece_bytes[sp.encode("a")].sum()) - 1
        # A plain model's pieces are the text's own characters (its normaliser only escapes
        # spaces), so spans are counted in characters, with no byte-to-character conversion:
        # an ordinary piece covers its characters; a byte piece covers the character its byte
        # belongs to, and advances past it at that character's first byte.
        self._plain = self._escapes_only() and not any(map(_SPACE_INSIDE.search, compress(pieces, ordinary)))
        continuation = [
            is_byte and 0x80 <= int(piece[3:5], 16) < 0xC0  # "<0xNN>"
            for piece, is_byte in zip(pieces, byte.tolist(), strict=True)
        ]
        widths = np.where(byte, 1, np.where(ordinary, [len(piece) for piece in pieces], 0))
        self._piece_width = widths.astype(np.int64)
        self._piece_advance = np.where(continuation, 0, widths).astype(np.int64)
        self._prefix_chars = int(self._piece_advance[sp.encode("a")].sum()) - 1
        self._word_ids: dict[str, bytes] = {}  # a plain model's words -> their ids (int32 bytes)
        self._cached_chars = 0

    def _escapes_only(self) -> bool:
        """Whether the normaliser does nothing but escape spaces and add the dummy prefix."""
        return all(
            self._sp.normalize(probe) == "\u2581" + probe.replace(" ", "\u2581")
            for probe in _NORMALIZER_PROBES
        )

    @cached_property  # hashes the model file: once
    def fingerprint(self) -> str:
        return fingerprint({"tokenizer": "sentencepiece", "sha256": file_sha256(self.path)})

    def encode(self, text: str) -> Encoding:
        ids = self._ids(text)
        lengths = self._piece_bytes[ids]
        total = len(text.encode("utf-8", "surrogatepass"))
        if lengths.sum() != total + self._prefix_bytes:  # unknown pieces: ask for offsets
            return self._encode_with_offsets(text)
        if not self._plain:
            ends = np.cumsum(lengths) - self._prefix_bytes
            byte_spans = np.stack([np.maximum(ends - lengths, 0), np.maximum(ends, 0)], axis=1)
            return Encoding(ids, _byte_to_char_spans(text, byte_spans))
        ends = np.cumsum(self._piece_advance[ids]) - self._prefix_chars
        spans = np.stack([np.maximum(ends - self._piece_width[ids], 0), np.maximum(ends, 0)], axis=1)
        return Encoding(ids, spans.astype(np.int32))

    def _ids(self, text: str) -> np.ndarray:
        """SentencePiece's ids of ``text``; a plain model's word by word, those of words met
        before from the cache, the rest in one SentencePiece call (loops in C: a text has
        thousands of words)."""
        if not self._plain:
            return np.asarray(self._sp.encode(text), dtype=np.int32)
        words = _WORD_BREAK.split(text)
        found = list(map(self._word_ids.get, words))
        if None in found:
            new = list(dict.fromkeys(compress(words, map(is_, found, repeat(None)))))
            encoded = self._sp.encode(new, num_threads=1)  # (one core: a worker is one)
            fresh = dict(zip(new, map(bytes, map(array, repeat("i"), encoded)), strict=True))
            found = list(map(fresh.get, words, found))
            self._remember(fresh)
        return np.frombuffer(b"".join(found), dtype=np.intc).astype(np.int32)  # (a writable copy)

    def _remember(self, fresh: dict[str, bytes]) -> None:
        chars = sum(map(len, fresh))
        if len(self._word_ids) + len(fresh) > _CACHED_WORDS or self._cached_chars + chars > _CACHED_CHARS:
            self._word_ids.clear()
            self._cached_chars = 0
        self._word_ids.update(fresh)
        self._cached_chars += chars

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
