"""Reading pixels back into text with an OCR engine, to score what a model draws.

The engine is Tesseract 5 (Debian's ``tesseract-ocr``, through ``pytesseract``), chosen by
measuring on pixeltext's own strips: on 40 rendered lines of English it has a character error
rate of 0.25% at twice the strip's size, where RapidOCR (ONNX models in its wheel) had 2.8% at
its best (four times) and was four times slower. A strip is read as one line of text: grey,
scaled up twice, with a white border (Tesseract reads 16-pixel-high text poorly as it is).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from pixeltext_render.preview import as_rgb

SCALE = 2
BORDER = 10  # white pixels around the text, at the strip's size
LINE = "--psm 7"  # Tesseract: the picture is one line of text


class OCRMissing(ImportError):
    """No OCR engine on this machine; the message says what to install (an ImportError, as a
    missing extra is: the commands print it as a sentence)."""


def _engine():
    try:
        import pytesseract
    except ImportError:
        raise OCRMissing("OCR needs pytesseract: `make install`, or pip install pytesseract") from None
    try:
        pytesseract.get_tesseract_version()
    except pytesseract.TesseractNotFoundError:
        raise OCRMissing(
            "OCR needs the Tesseract 5 engine: `make install` installs it on Debian and Ubuntu "
            "(apt-get install tesseract-ocr); elsewhere install tesseract and put it on PATH"
        ) from None
    return pytesseract


def read_pixels(pixels: np.ndarray) -> str:
    """The text an OCR engine reads in a strip picture [H, W, 3] (or [H, W], [H, W, 1]), on one line."""
    if pixels.size == 0:
        return ""
    image = Image.fromarray(np.ascontiguousarray(as_rgb(pixels))).convert("L")
    image = image.resize((image.width * SCALE, image.height * SCALE), Image.Resampling.LANCZOS)
    image = ImageOps.expand(image, border=BORDER * SCALE, fill=255)
    return " ".join(_engine().image_to_string(image, config=LINE).split())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions from a to b."""
    row = list(range(len(b) + 1))
    for i, char in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, other in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (char != other))
    return row[-1]


def character_error_rate(predictions: list[str], truths: list[str]) -> float:
    """Edits from each prediction to its truth, over the truths' characters (all pairs pooled)."""
    characters = sum(len(t) for t in truths)
    edits = sum(edit_distance(p, t) for p, t in zip(predictions, truths, strict=True))
    return edits / max(characters, 1)
