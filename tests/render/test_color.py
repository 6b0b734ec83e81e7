"""Colour modes (``RenderConfig.color``): rgb as before, gray luminance and binary ink in one
channel, their shards (smaller, decoding to their channels) and their fingerprints."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from pixeltext_render import RenderConfig, Renderer
from pixeltext_render.cli import main as cli_main
from pixeltext_render.config import COLORS
from pixeltext_render.format.sample import InvalidSample, decode_sample, encode_strip
from pixeltext_render.job.pipeline import RenderJob, run
from pixeltext_render.raster import BINARY_THRESHOLD, convert_color, luminance

# colour glyphs (emoji) make rgb strips RGB; without them a black-on-white rgb strip is stored grey
COLOURFUL = "Colour modes 🎨🍎🌈 on the same text: rgb keeps the palette, gray its luminance."


@pytest.fixture(scope="module")
def renderers(renderer) -> dict[str, Renderer]:
    return {"rgb": renderer} | {c: Renderer(RenderConfig(color=c)) for c in COLORS if c != "rgb"}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    """The same four documents rendered by the real job in each colour mode (byte tokens)."""
    folder = tmp_path_factory.mktemp("colour-corpus")
    texts = [COLOURFUL, "Plain black text on white paper.", f"{COLOURFUL} " * 6, "🎨 " * 40]
    corpus = folder / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    made = {}
    for color in COLORS:
        made[color] = tmp_path_factory.mktemp(f"shards-{color}")
        job = RenderJob((str(corpus),), str(made[color]), tokenizer="bytes", config=RenderConfig(color=color))
        run(job, workers=1, progress=False)
    return made


def samples(folder: Path) -> list[dict]:
    return list(wds.WebDataset(sorted(str(p) for p in folder.glob("*.tar")), shardshuffle=False))


def test_rgb_is_the_default_and_keeps_the_fingerprint_and_the_pixels(renderers):
    default = Renderer(RenderConfig())
    assert "color" not in RenderConfig().to_dict()  # (recorded only when not rgb: old fingerprints hold)
    assert RenderConfig.from_dict(RenderConfig().to_dict()) == RenderConfig(color="rgb")
    assert default.fingerprint == renderers["rgb"].fingerprint
    for text in (COLOURFUL, "Plain black text."):
        image = renderers["rgb"].render(text).strips[0].image
        assert np.array_equal(default.render(text).strips[0].image, image)
        assert convert_color(image, "rgb") is image  # rgb strips are stored as drawn
    assert renderers["rgb"].render(COLOURFUL).strips[0].image.ndim == 3  # emoji: RGB
    assert renderers["rgb"].render("Plain black text.").strips[0].image.ndim == 2  # grey, as before


def test_each_mode_has_its_own_fingerprint(renderers):
    prints = {color: r.fingerprint for color, r in renderers.items()}
    assert len(set(prints.values())) == len(COLORS), prints
    assert renderers["gray"].describe()["config"]["color"] == "gray"


def test_gray_is_the_luminance_and_binary_its_threshold_in_one_channel(renderers):
    rgb = renderers["rgb"].render(COLOURFUL).strips[0]
    gray = renderers["gray"].render(COLOURFUL).strips[0]
    binary = renderers["binary"].render(COLOURFUL).strips[0]
    assert gray.image.shape == binary.image.shape == (*rgb.image.shape[:2], 1)
    assert gray.pixels.shape[2] == binary.pixels.shape[2] == 1
    # Pillow's convert("L"): the official code's conversion of its RGB strips to grey
    assert np.array_equal(gray.image[..., 0], np.asarray(Image.fromarray(rgb.image).convert("L")))
    assert len(np.unique(gray.image)) > 2  # grey levels (antialiasing, the emoji's colours)
    assert set(np.unique(binary.image)) == {0, 255}
    assert np.array_equal(binary.image, np.where(gray.image > BINARY_THRESHOLD, 255, 0))
    assert gray.num_text_patches == rgb.num_text_patches and np.array_equal(gray.token_ids, rgb.token_ids)
    assert (
        gray.image[:, rgb.num_text_patches * 16 : (rgb.num_text_patches + 1) * 16] == 0
    ).all()  # end patch
    # a grey pixel keeps its value (the weights sum to one), so grey strips are the same in gray
    plain = renderers["rgb"].render("Plain black text.").strips[0].image
    assert np.array_equal(renderers["gray"].render("Plain black text.").strips[0].image[..., 0], plain)
    assert np.array_equal(luminance(np.repeat(plain[..., None], 3, axis=2)), plain)


def test_pairs_are_drawn_in_the_mode_too(renderers):
    pair = renderers["binary"].render_pair("A premise 🎨.", "A hypothesis.")
    assert pair.image.shape[2] == 1 and set(np.unique(pair.image)) == {0, 255}


def test_shards_decode_to_their_channels_and_gray_and_binary_are_smaller(shards):
    sizes = {}
    for color, folder in shards.items():
        manifest = json.loads((folder / "manifest.json").read_text())
        config = RenderConfig.from_dict(manifest["render"]["config"])
        assert config.color == color and config.channels == (3 if color == "rgb" else 1)
        decoded = [decode_sample(s, 16, 259, config.channels) for s in samples(folder)]
        assert all(d.pixels.shape[2] == config.channels for d in decoded)
        if color == "binary":
            assert set(np.unique(np.concatenate([d.pixels.ravel() for d in decoded]))) == {0, 255}
        sizes[color] = sum(len(s["png"]) for s in samples(folder))
    assert sizes["gray"] < sizes["rgb"] and sizes["binary"] < sizes["gray"], sizes


def test_a_grey_png_of_rgb_shards_still_decodes_to_rgb_and_rgb_is_refused_as_one_channel(shards):
    rgb = samples(shards["rgb"])
    grey = [s for s in rgb if Image.open(io.BytesIO(s["png"])).mode == "L"]
    colour = [s for s in rgb if s not in grey]
    assert grey and colour  # (the plain document is stored grey, the emoji ones in colour)
    assert decode_sample(grey[0], 16).pixels.shape[2] == 3
    with pytest.raises(InvalidSample, match="one channel"):
        decode_sample(colour[0], 16, channels=1)


def test_a_sample_is_stored_as_a_grey_png_in_one_channel_modes(renderers):
    for color in ("gray", "binary"):
        strip = renderers[color].render(COLOURFUL).strips[0]
        png = encode_strip(strip, "d", 0, 1, "s", 16)["png"]
        assert Image.open(io.BytesIO(png)).mode == "L"


def test_preview_draws_the_text_in_each_mode_asked(tmp_path, capsys):
    out = tmp_path / "modes.png"
    assert (
        cli_main(["preview", "--text", COLOURFUL, "--color", "gray", "--color", "binary", "--out", str(out)])
        == 0
    )
    one = tmp_path / "one.png"
    assert cli_main(["preview", "--text", COLOURFUL, "--out", str(one)]) == 0
    assert Image.open(out).height > 2 * Image.open(one).height  # both strips, one under the other
    assert json.loads(capsys.readouterr().out.splitlines()[0])["strips"] == 1


def test_an_unknown_mode_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="color must be one of"):
        RenderConfig(color="sepia")
    with pytest.raises(ValueError, match="color must be one of"):
        dataclasses.replace(RenderConfig(), color="grey")
