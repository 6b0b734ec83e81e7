"""Evaluate pre-trained checkpoints: ``python eval/run.py task=... checkpoint=... modality=...``.

- language understanding (``task=rotten_tomatoes``, a GLUE task, ``xnli``, ``custom``):
  fine-tune with a sequence head, score, write ``results.json``; ``rendered=official``: GLUE or
  XNLI on the paper's own rendered strips (``data_dir``: its released folder or tar);
- ``task=intrinsic``: held-out next-token loss, bits per byte and next-patch loss;
- ``task=reconstruct prompt="..."``: ``reconstruction.png``, the strip and the model's
  next-patch predictions under it;
- ``task=generate modality=text|pixel|read prompt="..."`` (or ``prompt_image=strip.png``):
  ``generation.json`` and, for pixel and read, ``generation.png``;
- ``task=cloze``: last-word prediction in text and pixels (read by OCR) and the character error
  rate of reading strips, on held-out passages (or LAMBADA's file: ``data_dir=``).
Everything is written to the Hydra run directory (``outputs/eval/<task>/<modality>/<time>``).
"""

import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pixeltext_train.cli import check_finite, reported, store_defaults
from pixeltext_train.evaluate.backbone import load_backbone
from pixeltext_train.evaluate.cloze import cloze, lambada_passages, plot_passages
from pixeltext_train.evaluate.finetune import FinetuneOptions, finetune
from pixeltext_train.evaluate.generation import GenerateOptions, write_generation
from pixeltext_train.evaluate.intrinsic import intrinsic
from pixeltext_train.evaluate.reconstruct import write_reconstruction
from pixeltext_train.evaluate.rendered import check_rendered, rendered_task
from pixeltext_train.evaluate.tasks import load_task

store_defaults("finetune", FinetuneOptions, set_by_command=("modality", "seed", "init_seed"))
store_defaults("generate", GenerateOptions)


@hydra.main(config_path="../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with reported("eval"):
        check_finite(cfg)
        evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))


def evaluate(cfg: DictConfig, run_dir: Path) -> None:
    check_rendered(cfg.task, cfg.rendered)
    official = cfg.rendered == "official"  # the paper's own pixels, not ours
    allow = cfg.allow_render_difference or (
        cfg.modality == "text" and cfg.task not in ("reconstruct", "intrinsic", "cloze")
    )
    model = OmegaConf.to_container(cfg.model, resolve=True)
    backbone = load_backbone(cfg.checkpoint, model, allow, official_pixels=official)
    if cfg.task == "generate":
        options = GenerateOptions(**cfg.generate)
        record = write_generation(backbone, cfg.modality, options, run_dir, cfg.prompt, cfg.prompt_image)
        print(json.dumps(record, indent=2, ensure_ascii=False))
        return
    if cfg.task == "cloze":
        passages = lambada_passages(cfg.data_dir) if cfg.data_dir else plot_passages()
        results = cloze(backbone, passages, GenerateOptions(**cfg.generate), cfg.passages)
        results |= {"task": "cloze", "checkpoint": backbone.source, "source": cfg.data_dir or "film plots"}
        (run_dir / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
        print(json.dumps({k: v for k, v in results.items() if k != "examples"}, indent=2))
        print(f"results: {run_dir / 'results.json'}")
        return
    if cfg.task == "reconstruct":
        if not cfg.prompt:
            raise SystemExit('task=reconstruct needs prompt="..." (the text to render)')
        print(write_reconstruction(backbone, cfg.prompt, run_dir / "reconstruction.png", cfg.max_patches))
        return
    if cfg.task == "intrinsic":
        results = intrinsic(backbone, cfg.shards, cfg.val_fraction, cfg.max_strips)
        results |= {"task": "intrinsic", "checkpoint": backbone.source, "shards": cfg.shards}
        (run_dir / "results.json").write_text(json.dumps(results, indent=2, default=float))
    else:
        given = OmegaConf.to_container(cfg, resolve=True)
        patch_size = backbone.renderer.config.patch_size
        task = rendered_task(cfg.task, given, patch_size) if official else load_task(cfg.task, given)
        options = FinetuneOptions(modality=cfg.modality, seed=cfg.seed, **cfg.finetune)
        results = finetune(task, backbone, options, run_dir)  # writes results.json
    print(json.dumps(results, indent=2, default=float))
    print(f"results: {run_dir / 'results.json'}")


if __name__ == "__main__":
    main()
