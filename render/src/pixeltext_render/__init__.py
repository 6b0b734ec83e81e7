"""Text seen as pixels: RGB strips of patches, with the tokens of the text they show."""

from pixeltext_render.config import RenderConfig
from pixeltext_render.renderer import PairStrip, RenderedDocument, Renderer, Strip
from pixeltext_render.tokenizers import Encoding, load_tokenizer

__all__ = [
    "Encoding",
    "PairStrip",
    "RenderConfig",
    "RenderedDocument",
    "Renderer",
    "Strip",
    "load_tokenizer",
]
