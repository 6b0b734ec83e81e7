"""``task=generate`` and ``task=cloze``: what they write, the prompts they refuse, the OCR they
score with and the passages they read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pixeltext_train.evaluate import ocr
from pixeltext_train.evaluate.backbone import load_backbone
from pixeltext_train.evaluate.cloze import (
    cloze,
    english_words,
    lambada_passages,
    last_word_passage,
    plot_passages,
)
from pixeltext_train.evaluate.generation import MARK, SCALE, GenerateOptions, write_generation

REPO = Path(__file__).resolve().parents[2]
PROMPT = "The river runs past the old mill and"


@pytest.fixture(scope="module")
def backbone(tiny_checkpoint):
    return load_backbone(tiny_checkpoint)


def test_eval_run_generates_from_a_strip_picture(backbone, tiny_checkpoint, tmp_path):
    strip = backbone.renderer.render(PROMPT).strips[0]
    picture = tmp_path / "prompt.png"
    Image.fromarray(np.ascontiguousarray(strip.pixels)).save(picture)  # the whole strip, end patch and all
    out = tmp_path / "run"
    command = [
        sys.executable,
        "eval/run.py",
        "task=generate",
        f"checkpoint={tiny_checkpoint}",
        "modality=pixel",
    ]
    command += [f"prompt_image={picture}", "generate.max_new_patches=5", f"hydra.run.dir={out}"]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    record = json.loads((out / "generation.json").read_text())
    assert record["modality"] == "pixel" and record["prompt_positions"] == strip.num_text_patches
    assert record["stopped"] in ("end_patch", "max_new") and record["new_patches"] <= 5
    image = np.asarray(Image.open(out / "generation.png").convert("RGB"))
    band = image[16 * SCALE + 1]  # the row under the strip: the continuation's patches, marked
    marked = (band == MARK).all(axis=1)
    assert not marked[: strip.num_text_patches * 16 * SCALE - SCALE].any()
    assert marked[strip.num_text_patches * 16 * SCALE :].all()


def test_each_mode_writes_what_it_made(backbone, tmp_path):
    options = GenerateOptions(max_new_tokens=6, max_new_patches=4)
    for modality in ("text", "pixel", "read"):
        record = write_generation(backbone, modality, options, tmp_path / modality, prompt=PROMPT)
        written = json.loads((tmp_path / modality / "generation.json").read_text())
        assert written == record
        assert {"modality", "prompt", "text", "token_ids", "new_patches", "stopped", "seconds"} <= set(record)
        if modality == "pixel":
            assert record["text"] is None and record["token_ids"] == [] and 0 < record["new_patches"] <= 4
        else:
            assert 0 < len(record["token_ids"]) <= 6 and record["new_patches"] == 0
            assert record["text"] == backbone.renderer.tokenizer.decode(
                [t for t in record["token_ids"] if t != backbone.renderer.tokenizer.eos_id]
            )
        assert (tmp_path / modality / "generation.png").exists() == (modality != "text")


def test_bad_prompts_are_refused_with_a_sentence(backbone, tmp_path):
    options = GenerateOptions()
    tall = tmp_path / "tall.png"
    Image.fromarray(np.full((20, 64, 3), 255, np.uint8)).save(tall)
    not_a_picture = tmp_path / "notes.png"
    not_a_picture.write_text("not a picture")
    for modality, prompt, image, message in (
        ("text", "   ", None, "give prompt="),
        ("pixel", "", None, "the prompt is empty"),
        ("pixel", None, tall, "16 pixels high; this image is 20"),
        ("read", None, not_a_picture, "cannot read .* as a picture"),
        ("pixel", "x " * 2000, None, "longer than the model's 256"),
        ("pair", PROMPT, None, "modality must be one of"),
        ("pixel", PROMPT, tall, "not both"),
    ):
        with pytest.raises(ValueError, match=message):
            write_generation(backbone, modality, options, tmp_path / "x", prompt=prompt, prompt_image=image)
    with pytest.raises(ValueError, match=r"generate\.max_new_tokens must be at least 1"):
        GenerateOptions(max_new_tokens=0)


def test_the_ocr_reads_rendered_text_and_says_what_is_missing(renderer, monkeypatch):
    line = "Seven quiet rivers ran through the valley."
    strip = renderer.render(line).strips[0]
    read = ocr.read_pixels(np.ascontiguousarray(strip.pixels[:, : strip.num_text_patches * 16]))
    assert ocr.character_error_rate([read], [line]) < 0.05, read
    assert ocr.edit_distance("kitten", "sitting") == 3 and ocr.edit_distance("", "abc") == 3
    import pytesseract

    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    with pytest.raises(ocr.OCRMissing, match="apt-get install tesseract-ocr"):
        ocr.read_pixels(np.ascontiguousarray(strip.pixels))


def test_passages_end_in_a_word_from_plots_or_lambadas_file(tmp_path):
    assert last_word_passage("He opened the door and saw his brother.") == last_word_passage(
        "He opened the door and saw his   brother"
    )
    assert last_word_passage("Numbers: 1 2 3") is None and last_word_passage("word") is None
    plots = plot_passages()
    assert len(plots) > 900 and all(len(p.context.split()) >= 19 and p.target.isalpha() for p in plots)
    (tmp_path / "lambada_test.jsonl").write_text(
        json.dumps({"text": "she handed him the key and he opened the door"}) + "\n\n"
    )
    (passage,) = lambada_passages(tmp_path)
    assert passage.target == "door" and passage.context.endswith("opened the")
    (tmp_path / "bad.jsonl").write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="line 1 is not a JSON object with a text"):
        lambada_passages(tmp_path / "bad.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds none of LAMBADA's files"):
        lambada_passages(tmp_path / "empty")
    assert {"harbour", "harbor", "jumped"} <= english_words()


def test_cloze_scores_text_pixels_and_reading_with_the_ocr_calibrated(backbone):
    results = cloze(backbone, plot_passages(), GenerateOptions(), limit=4, progress=False)
    assert results["passages"] == 4
    for key in ("text_accuracy", "pixel_accuracy", "readable_rate"):
        value, error = results[key]["value"], results[key]["standard_error"]
        assert 0 <= value <= 1 and error == pytest.approx((value * (1 - value) / 4) ** 0.5)
    assert results["read_cer"] >= 0
    calibration = results["ocr_calibration"]
    assert calibration["passage_cer"] < 0.05  # the OCR reads the renderer's own strips
    assert calibration["target_accuracy"]["value"] >= 0.75
    example = results["examples"][0]
    assert example["truth"] == f"{example['context']} {example['target']}"
