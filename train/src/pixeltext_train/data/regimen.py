"""Which kind of sequence each strip becomes: a draw from the regimen's ratios (``data.regimen``),
by the reader's stream generator, so that a resumed stream draws the same kinds again."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pixeltext_train.data.sequences import MODALITIES


@dataclass
class Regimen:
    """Relative frequencies of the three kinds of sequence made from strips."""

    pixel: float = 1.0
    text: float = 1.0
    pair: float = 1.0

    def __post_init__(self) -> None:
        weights = [self.pixel, self.text, self.pair]
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"data.regimen ratios must be >= 0 with a positive sum, got {weights}")

    def choose(self, rng: np.random.Generator) -> str:
        """A kind of sequence, drawn with the regimen's frequencies."""
        bounds = np.cumsum([self.pixel, self.text, self.pair])
        return MODALITIES[min(int(np.searchsorted(bounds, rng.random() * bounds[-1], side="right")), 2)]
