"""A checkpoint's tokenizer as Hugging Face files: ``tokenizer.json`` and ``tokenizer_config.json``.

``AutoTokenizer.from_pretrained(folder)`` then loads a ``PreTrainedTokenizerFast`` with no
conversion step (``transformers`` converts a bare SentencePiece ``tokenizer.model`` only with
``protobuf`` versions that may not be installed). The ids are pixeltext's:

- ``sentencepiece``: the model's BPE as a ``tokenizers`` BPE (its pieces, and merges ranked
  by the score of the piece they make), SentencePiece's normalisation (a leading ``▁``, spaces
  as ``▁``) and byte fallback; Llama 2's template, ``<s> A`` and ``<s> A <s> B``;
- ``bytes``: 256 byte tokens and ``<bos>``, ``<eos>``, ``<pad>``;
- ``hf:tokenizer.json``: copied as it is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, processors

from pixeltext_render.tokenizers import ByteTokenizer, SentencePieceTokenizer, load_tokenizer

SPACE = "\u2581"
# Checked after writing: the Hugging Face tokenizer must give pixeltext's ids on these (a
# SentencePiece model with normalisation rules, e.g. NFKC, would not, and is refused).
PROBES = (
    "The quick brown fox, 1,024 patches; über-naïve café.",
    "  two  spaces\tand a tab\nand a line",
    "ﬁ ligature, ① circled, Ｆｕｌｌ width",
    "日本語のテキスト、中文文本。 Ελληνικά Русский עברית العربية हिन्दी",
    "emoji 😀🤖🏽 and ZWJ 👩\u200d💻",
)


def _sentencepiece(tokenizer: SentencePieceTokenizer) -> tuple[Tokenizer, dict[str, str]]:
    processor = tokenizer._sp
    pieces = [processor.id_to_piece(i) for i in range(tokenizer.vocab_size)]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    ordinary = [
        i
        for i in range(tokenizer.vocab_size)
        if not (processor.is_control(i) or processor.is_unknown(i) or processor.is_byte(i))
    ]
    rank = {pieces[i]: r for r, i in enumerate(sorted(ordinary, key=lambda i: (-processor.get_score(i), i)))}
    merges = []
    for piece, order in rank.items():  # every way of making a piece from two pieces, by its rank
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in vocab and right in vocab:
                merges.append((order, vocab[left], vocab[right], left, right))
    merges.sort()
    unknown = processor.id_to_piece(processor.unk_id())
    bpe = models.BPE(
        vocab, [(m[3], m[4]) for m in merges], unk_token=unknown, fuse_unk=True, byte_fallback=True
    )
    hf = Tokenizer(bpe)
    hf.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    hf.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    bos, eos = pieces[tokenizer.bos_id], pieces[tokenizer.eos_id]
    hf.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1", special_tokens=[(bos, tokenizer.bos_id)]
    )
    return hf, {"bos_token": bos, "eos_token": eos, "unk_token": unknown}


def _bytes(tokenizer: ByteTokenizer) -> tuple[Tokenizer, dict[str, str]]:
    vocab = {f"<0x{i:02X}>": i for i in range(256)} | {"<bos>": 256, "<eos>": 257, "<pad>": 258}
    hf = Tokenizer(models.BPE(vocab, [], byte_fallback=True))
    hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    hf.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos>:1 $B:1", special_tokens=[("<bos>", tokenizer.bos_id)]
    )
    return hf, {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}


def write_tokenizer(spec: str, out: Path) -> None:
    """Write the tokenizer of ``spec`` (a pixeltext tokenizer spec) into the folder ``out``."""
    tokenizer = load_tokenizer(spec)
    if isinstance(tokenizer, SentencePieceTokenizer):
        hf, specials = _sentencepiece(tokenizer)
        hf.save(str(out / "tokenizer.json"))
    elif isinstance(tokenizer, ByteTokenizer):
        hf, specials = _bytes(tokenizer)
        hf.save(str(out / "tokenizer.json"))
    else:  # a tokenizer.json already
        shutil.copyfile(tokenizer.path, out / "tokenizer.json")
        specials = {}
    written = Tokenizer.from_file(str(out / "tokenizer.json"))
    for probe in PROBES:
        if written.encode(probe, add_special_tokens=False).ids != tokenizer.encode(probe).ids.tolist():
            (out / "tokenizer.json").unlink()
            raise ValueError(
                f"the Hugging Face form of tokenizer {spec!r} tokenises {probe!r} differently "
                "(a SentencePiece model with normalisation rules?); no tokenizer written"
            )
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1_000_000, **specials}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
