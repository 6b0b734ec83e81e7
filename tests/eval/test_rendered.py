"""The paper's rendered GLUE and XNLI (``rendered=official``): a small release written here in
the official layout (``<task>-<split>/part-00000.gz``, JSON Lines, each strip a base64 grey PNG
of the full strip width with its black end patch, as the official renderer makes them; drawn
here by pixeltext's renderer), read with its bad rows counted, shown to the model unchanged and
fine-tuned on."""

from __future__ import annotations

import base64
import gzip
import io
import json
import runpy
import tarfile
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from pixeltext_train.evaluate.backbone import InputBudget, RenderMismatch, encode_example, load_backbone
from pixeltext_train.evaluate.rendered import check_rendered, paper_strip, rendered_task
from pixeltext_train.evaluate.tasks import Example, StoredImage, TaskError

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "hidden_size": 32,
    "num_layers": 1,
    "num_heads": 2,
    "num_kv_heads": 1,
    "intermediate_size": 64,
    "max_positions": 128,
}
PAIRS = [
    ("Dana bought a car last week.", "Dana owns a car."),
    ("It rained all day in the city.", "The sun shone all day."),
    ("The museum opened in 1850.", "The museum is old."),
    ("Tom never learned to swim.", "Tom is a champion swimmer."),
]
BAD_ROWS = {  # why a row is skipped -> how many rows of the train split break that way
    "image that is not base64": 1,
    "image that is not a PNG": 1,
    "image that cannot be decoded": 1,
    "image not 16 pixels high": 1,
    "missing or unknown label": 2,  # no label, and GLUE's -1 of an unlabelled row
    "missing sentence2": 1,
    "missing or invalid num_patches": 1,
    "missing image": 1,
    "line that is not JSON": 1,
}


def png(image: np.ndarray) -> str:
    """An image as the release stores it: base64 of its PNG file."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def official_row(
    renderer, premise: str, hypothesis: str, label: int, fields=("sentence1", "sentence2")
) -> dict:
    """A row as the official release holds it: the pair (in the task's ``fields``) and the pair
    drawn in one grey strip, black on white, the full strip width, the black end patch after
    ``num_patches`` text patches."""
    strip = renderer.render_pair(premise, hypothesis)
    assert strip.is_grey and (strip.image[:, strip.num_text_patches * 16 :][:, :16] == 0).all()
    image = strip.image[:, : 64 * 16]  # (the official strips are 529 or 1024 patches wide)
    return {
        fields[0]: premise,
        fields[1]: hypothesis,
        "label": label,
        "idx": 0,
        "image": png(image),
        "num_patches": strip.num_text_patches,
    }


def broken_rows(good: dict) -> list[dict | str]:
    """One row per way a row can break (``BAD_ROWS``)."""
    data = base64.b64decode(good["image"])
    inside = data.index(b"IDAT") + 6  # (the compressed pixels: their checksum no longer matches)
    corrupt = data[:inside] + bytes(b ^ 0xFF for b in data[inside : inside + 4]) + data[inside + 4 :]
    gif = base64.b64encode(b"GIF89a" + bytes(40)).decode()
    without = {key: {k: v for k, v in good.items() if k != key} for key in ("label", "sentence2", "image")}
    return [
        {**good, "image": "not base64 at all!"},
        {**good, "image": gif},
        {**good, "image": base64.b64encode(corrupt).decode()},
        {**good, "image": png(np.full((8, 64), 255, np.uint8))},
        without["label"],
        {**good, "label": -1},
        without["sentence2"],
        {**good, "num_patches": "many"},
        without["image"],
        '{"sentence1": "cut off',
    ]


def write_release(root: Path, splits: dict[str, list[dict | str]], compress: bool = True) -> Path:
    """``root/<split>/part-00000.gz`` for each split, its rows as JSON Lines (gzip unless not)."""
    for split, rows in splits.items():
        (root / split).mkdir(parents=True)
        text = "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows).encode()
        (root / split / "part-00000.gz").write_bytes(gzip.compress(text) if compress else text)
    return root


@pytest.fixture()
def rte_release(tmp_path, renderer) -> Path:
    """rendered_GLUE's RTE: 8 good and ``BAD_ROWS`` broken training rows, 4 validation rows."""
    good = [official_row(renderer, *PAIRS[i % 4], i % 2) for i in range(8)]
    splits = {"rte-train": good + broken_rows(good[0]), "rte-validation": good[:4]}
    return write_release(tmp_path / "rendered_glue", splits)


def test_the_official_layout_is_read_with_its_bad_rows_counted(rte_release, tmp_path):
    task = rendered_task("rte", {"data_dir": str(rte_release.parent)})
    assert task.labels == ["entailment", "not_entailment"] and task.metrics == ["accuracy"]
    assert len(task.train) == 8 and list(task.evaluations) == ["validation"]
    assert task.skip_reasons == BAD_ROWS and task.skipped == sum(BAD_ROWS.values())
    first = task.train[0]  # (read back from the task's store on disk)
    assert (first.text, first.pair, first.label) == (*PAIRS[0], 0) and first.image.text_patches > 0
    with tarfile.open(tmp_path / "rendered_glue.tar", "w") as archive:  # the release as downloaded
        archive.add(rte_release, arcname="rendered_glue")
    from_tar = rendered_task("rte", {"data_dir": str(tmp_path / "rendered_glue.tar")})
    assert list(from_tar.train) == list(task.train) and from_tar.skip_reasons == BAD_ROWS
    part = rte_release / "rte-train" / "part-00000.gz"
    part.write_bytes(part.read_bytes()[: part.stat().st_size * 2 // 3])  # a download cut off
    cut = rendered_task("rte", {"data_dir": str(rte_release)})
    assert 0 < len(cut.train) < 8 and cut.skip_reasons == {
        "part file cut off or corrupt (its remaining rows)": 1
    }


def test_a_missing_split_or_task_is_an_error_saying_what_to_pass(rte_release, tmp_path):
    with pytest.raises(TaskError, match=r"no mnli-train/part-\*\.gz: point data_dir at the extracted"):
        rendered_task("mnli", {"data_dir": str(rte_release)})
    with pytest.raises(TaskError, match="needs data_dir"):
        rendered_task("rte", {})
    with pytest.raises(TaskError, match="has no such release"):
        check_rendered("rotten_tomatoes", "official")
    with pytest.raises(TaskError, match="ours or official"):
        check_rendered("rte", "theirs")
    write_release(tmp_path / "empty", {"rte-train": ["[1, 2]", "{cut off"], "rte-validation": []})
    with pytest.raises(TaskError, match=r"rte-train in .* has no usable row"):
        rendered_task("rte", {"data_dir": str(tmp_path / "empty")})


def test_stored_pixels_reach_the_model_unchanged(rte_release):
    """The encoded patches are the stored image's, grey or RGB, cut to the budget as a rendered
    text is: the image is pixeltext's own drawing here, so both paths give the same input."""
    backbone = load_backbone(None, TINY)
    stored = rendered_task("rte", {"data_dir": str(rte_release)}).train[0]
    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(stored.image.data))).convert("RGB"))
    of_image = image.reshape(16, -1, 16, 3).transpose(1, 0, 2, 3).reshape(-1, 16 * 16 * 3)
    n, rendered = stored.image.text_patches, Example(stored.text, stored.pair, stored.label)
    assert 9 < n < 39 and (of_image[n] == 0).all()  # the stored black end patch, within the budgets
    for budget in (InputBudget(64, 40, 40, end_patch=True), InputBudget(10, 6, 10, end_patch=True)):
        _, ids, patches = encode_example(backbone, stored, "pixel", budget)
        shown = min(n, budget.positions - 1)  # the first patches that fit, then the end patch
        assert len(ids) == 0 and np.array_equal(
            patches, np.concatenate([of_image[:shown], of_image[n : n + 1]])
        )
        if budget.positions > n:  # the whole strip: what rendering the same text gives
            assert np.array_equal(patches, encode_example(backbone, rendered, "pixel", budget)[2])
    _, ids, patches = encode_example(backbone, stored, "pair", InputBudget(64, 40, 40, end_patch=True))
    ours = encode_example(backbone, rendered, "pair", InputBudget(64, 40, 40, end_patch=True))
    assert np.array_equal(patches, of_image[: n + 1]) and np.array_equal(patches, ours[2])
    assert np.array_equal(ids, ours[1])  # <s> A <s> B, tokenised from the row's texts
    rgb = Example(stored.text, stored.pair, stored.label, StoredImage(png(image), n))
    for modality in ("pixel", "pair"):
        for grey, colour in zip(
            encode_example(backbone, stored, modality, InputBudget.within(64)),
            encode_example(backbone, rgb, modality, InputBudget.within(64)),
            strict=True,
        ):
            assert grey == colour if isinstance(grey, str) else np.array_equal(grey, colour)


def test_xnli_in_both_settings_from_parts_gzipped_or_not(tmp_path, renderer):
    fields = ("premise", "hypothesis")
    splits = {
        f"xnli-{language}-{split}": [
            official_row(renderer, f"premise {language} {i}", f"hypothesis {i}", i % 3, fields)
            for i in range(3)
        ]
        for language in ("en", "fr")
        for split in ("train", "validation", "test")
    }
    root = write_release(tmp_path / "rendered_xnli", splits, compress=False)  # (plain JSON named .gz)
    english = rendered_task("xnli", {"data_dir": str(root), "languages": ["en", "fr"]})
    assert len(english.train) == 3 and next(iter(english.evaluations)) == "validation/en"
    assert english.averages == {
        "validation": ["validation/en", "validation/fr"],
        "test": ["test/en", "test/fr"],
    }
    assert english.labels == ["entailment", "neutral", "contradiction"] and english.skipped == 0
    options = {"data_dir": str(root), "languages": ["en", "fr"], "xnli_setting": "translate-train-all"}
    assert len(rendered_task("xnli", options).train) == 6


def test_fine_tuning_on_the_stored_pixels_from_the_command(rte_release, tmp_path):
    evaluate = runpy.run_path(str(REPO / "eval" / "run.py"))["evaluate"]
    overrides = [
        "task=rte",
        f"data_dir={rte_release}",
        "rendered=official",
        "checkpoint=none",
        *(f"model.{key}={value}" for key, value in TINY.items()),
        "finetune=quick",
        "finetune.workers=0",
        "finetune.batch_size=4",
        "finetune.max_steps=2",
        "finetune.warmup_steps=1",
        "finetune.eval_every=1",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    evaluate(cfg, tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["steps"] == 2 and "accuracy" in results["metrics"]["validation"]
    assert results["train_examples"] == 8 and results["skipped_reasons"] == BAD_ROWS


def test_a_checkpoint_of_pixeltext_pixels_is_refused_the_papers_unless_allowed(tiny_checkpoint):
    with pytest.raises(RenderMismatch, match="rendered=official shows it the paper's"):
        load_backbone(tiny_checkpoint, official_pixels=True)
    assert load_backbone(tiny_checkpoint, allow_render_difference=True, official_pixels=True).end_patch


def test_stored_pixels_follow_the_checkpoints_colour_mode(rte_release):
    """A checkpoint fine-tuned in gray or binary sees the stored image as the official
    ``render_mode`` converts it: one channel, binary only black and white."""
    stored = rendered_task("rte", {"data_dir": str(rte_release)}).train[0].image
    rgb = paper_strip(stored, 16).pixels
    for color in ("gray", "binary"):
        pixels = paper_strip(stored, 16, color).pixels
        assert pixels.shape == (*rgb.shape[:2], 1)
        if color == "gray":  # the stored image is grey: its value, unchanged
            assert np.array_equal(pixels[..., 0], rgb[..., 0])
        else:
            assert set(np.unique(pixels)) <= {0, 255}
            assert np.array_equal(pixels[..., 0] == 255, rgb[..., 0] > 127)
