"""The command line and the installed assets."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from pixeltext_render.assets import ASSETS, AssetError, asset_path, missing_assets
from pixeltext_render.cli import main


def test_install_brought_every_asset_intact():
    assert missing_assets() == []
    assert len(ASSETS) > 40


def test_a_missing_asset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELTEXT_ASSETS", str(tmp_path))
    with pytest.raises(AssetError, match="make install"):
        asset_path("tokenizers/llama2-design-32k.model")


def test_preview_writes_a_readable_png_and_a_summary(tmp_path, capsys):
    out = tmp_path / "preview.png"
    assert main(["preview", "--text", "Hello, pixels! Привет, مرحبا, 你好 😀", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["strips"] == 1 and summary["missing_glyphs"] == 0 and summary["tokens"] > 5
    assert len(summary["text_patches"]) == 1
    image = Image.open(out)
    assert image.mode == "RGB" and image.width == 64 * 16 * 3 and image.height >= 16 * 3


def test_preview_of_a_file_and_of_a_pair(tmp_path, capsys, articles):
    source = tmp_path / "article.txt"
    source.write_text(articles[0]["text"], encoding="utf-8")
    assert main(["preview", "--file", str(source), "--out", str(tmp_path / "a.png")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["strips"] > 1 and len(summary["text_patches"]) == summary["strips"]
    assert (
        main(["preview", "--text", "premise", "--text-pair", "hypothesis", "--out", str(tmp_path / "p.png")])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["strips"] == 1


def test_preview_reads_a_config_file(tmp_path, capsys):
    config = tmp_path / "render.yaml"
    config.write_text("patch_size: 8\nmax_patches: 32\nfont_size: 7\n")
    main(
        [
            "preview",
            "--text",
            "small patches " * 10,
            "--config",
            str(config),
            "--out",
            str(tmp_path / "s.png"),
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["strips"] > 1 and max(summary["text_patches"]) <= 31
