"""``pixeltext-render``: preview a rendering, manage assets."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pixeltext_render.config import COLORS, STRATEGIES


def _load_config(path: str | None):
    from pixeltext_render.config import RenderConfig

    if path is None:
        return RenderConfig()
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith((".yaml", ".yml")):
        import yaml

        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    return RenderConfig.from_dict(values)


def _preview(args: argparse.Namespace) -> int:
    from pixeltext_render.preview import preview_image
    from pixeltext_render.renderer import Renderer

    if (args.text is None) == (args.file is None):
        raise SystemExit("preview: give exactly one of --text or --file")
    text = (
        args.text if args.text is not None else Path(args.file).read_text(encoding="utf-8", errors="replace")
    )
    config = _load_config(args.config)
    shown = []  # each strategy's and colour mode's strips, one picture (the same text in each)
    variants = itertools.product(args.strategy or [config.strategy], args.color or [config.color])
    for strategy, color in variants:
        renderer = Renderer(dataclasses.replace(config, strategy=strategy, color=color), args.tokenizer)
        if args.text_pair is not None:
            shown.append([renderer.render_pair(text, args.text_pair)])
        else:
            shown.append(renderer.render(text).strips)
    everything = [strip for strips in shown for strip in strips]
    preview_image(everything, config.patch_size, args.patches_per_row, args.scale).save(args.out)
    strips = shown[0]
    summary = {
        "strips": len(strips),
        "text_patches": [s.num_text_patches for s in strips],
        "tokens": int(sum(len(s.token_ids) for s in strips)),
        "missing_glyphs": int(sum(s.missing_glyphs for s in strips)),
    }
    print(json.dumps(summary))
    return 0


def _assets(args: argparse.Namespace) -> int:
    from pixeltext_render.assets import ASSETS, assets_dir, fetch_assets, missing_assets

    if args.action == "fetch":
        fetched = fetch_assets(log=lambda m: print(m, file=sys.stderr))
        try:  # the default corpus is prepared for the render job, when it is installed
            from pixeltext_render.job.corpora import default_corpus
        except ImportError:
            corpus = "not prepared (the render job is not installed)"
        else:
            corpus = default_corpus().name
        print(
            f"{len(ASSETS)} assets ready in {assets_dir()} ({fetched} fetched); corpus {corpus}",
            file=sys.stderr,
        )
    elif args.action == "path":
        print(assets_dir())
    else:
        missing = {a.name for a in missing_assets()}
        for name in sorted(ASSETS):
            print(f"{'missing' if name in missing else 'ok':8} {name}")
        return 1 if missing else 0
    return 0


def _run(args: argparse.Namespace, beam_args: list[str]) -> int:
    try:
        from pixeltext_render.job.corpora import default_corpus
        from pixeltext_render.job.pipeline import RenderJob, run
        from pixeltext_render.job.readers.base import ReadOptions
    except ImportError as error:
        if (error.name or "").startswith("pixeltext_render"):
            raise  # (our own module: a broken install, not a missing extra)
        raise JobMissing(
            f"the render job needs its extra ({error.name} is missing): pip install 'pixeltext-render[job]'"
        ) from None
    # The modules imported so far (Beam's mostly) hold over 100,000 objects that live as long as
    # the process: the garbage collector skips them from here on, in every collection and at exit
    # (0.15 s of a small job).
    gc.freeze()

    from pixeltext_render.format.folder import REJECTED

    corpus = tuple(args.corpus or [str(default_corpus())])
    read = ReadOptions(args.format, args.text_field, args.id_field or None, args.lines, args.max_chars)
    job = RenderJob(
        corpus, args.out.rstrip("/"), read, _load_config(args.config), args.tokenizer, args.shard_samples
    )
    start = time.perf_counter()
    address = args.dask_address or os.environ.get("DASK_ADDRESS") or None
    manifest = run(job, args.runner, args.workers, beam_args, not args.quiet, address)
    seconds = time.perf_counter() - start
    totals = manifest["totals"]
    print(
        f"rendered {totals['documents']} documents into {totals['strips']} strips in {totals['shards']} "
        f"shards ({totals['bytes'] / 1e6:.1f} MB, {totals['strips'] / seconds:.0f} strips/s); "
        f"{totals['rejected']} rejected (see {REJECTED}/), {totals['missing_glyphs']} missing glyphs, "
        f"{totals['changed_chars']} characters changed by normalisation -> {job.out}"
    )
    return 0


def at_least(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least`` (refused before anything runs)."""

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return whole


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pixeltext-render", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    preview = commands.add_parser("preview", help="render a text and write a readable PNG")
    preview.add_argument("--text", help="the text to render")
    preview.add_argument("--file", help="read the text from this file (UTF-8)")
    preview.add_argument("--text-pair", help="render --text and this as a sentence pair")
    preview.add_argument("--config", help="render config as JSON or YAML (RenderConfig fields)")
    preview.add_argument(
        "--strategy",
        action="append",
        choices=STRATEGIES,
        help="rendering strategy instead of the config's; repeatable: one picture, the text in each",
    )
    preview.add_argument(
        "--color",
        action="append",
        choices=COLORS,
        help="colour mode instead of the config's; repeatable: one picture, the text in each mode",
    )
    preview.add_argument(
        "--tokenizer", default="sentencepiece", help="bytes | sentencepiece[:PATH] | hf:PATH"
    )
    preview.add_argument("--out", required=True, help="PNG file to write")
    preview.add_argument(
        "--patches-per-row", type=at_least(1), default=64, help="wrap the picture every N patches"
    )
    preview.add_argument("--scale", type=at_least(1), default=3, help="enlarge pixels this many times")
    preview.set_defaults(run=_preview)

    job = commands.add_parser(
        "run",
        help="render a corpus into WebDataset shards (Apache Beam; extra flags go to Beam)",
        description="Render a corpus into WebDataset shards with Apache Beam. Flags this command "
        "does not know are passed to Beam (e.g. --project, --region, --temp_location).",
    )
    job.add_argument(
        "--corpus",
        action="append",
        help="file, glob or URL (gs://, s3://...); repeatable. Default: the English Wikipedia sample",
    )
    job.add_argument("--out", default="outputs/shards", help="output folder (local or any Beam filesystem)")
    job.add_argument(
        "--format",
        choices=["auto", "parquet", "jsonl", "text"],  # (the formats job/readers/ reads)
        default="auto",
        help="input format; auto goes by file extension",
    )
    job.add_argument("--text-field", default="text", help="JSON field or Parquet column with the text")
    job.add_argument(
        "--id-field", default="id", help="field with a document id, used as its key when present"
    )
    job.add_argument("--lines", action="store_true", help="plain text: one document per line, not per file")
    job.add_argument("--max-chars", type=at_least(1), default=5_000_000, help="reject longer documents")
    job.add_argument(
        "--shard-samples", type=at_least(1), default=1000, help="about this many strips per shard"
    )
    job.add_argument(
        "--workers",
        type=at_least(0),
        default=0,
        help="local worker processes, DirectRunner or DaskRunner (default: cores, DirectRunner: fewer "
        "for a small job); on a cluster, the workers to spread the work over (default: a Dask "
        "cluster's threads, else 1000)",
    )
    job.add_argument(
        "--runner",
        default="DirectRunner",
        help="DirectRunner, DaskRunner, DataflowRunner, FlinkRunner, SparkRunner, PortableRunner",
    )
    job.add_argument(
        "--dask-address",
        help="DaskRunner: scheduler of a running cluster, tcp://host:8786 (default: $DASK_ADDRESS, "
        "else a local cluster of --workers processes made for the job)",
    )
    job.add_argument("--config", help="render config as JSON or YAML")
    job.add_argument("--tokenizer", default="sentencepiece", help="bytes | sentencepiece[:PATH] | hf:PATH")
    job.add_argument("--quiet", action="store_true", help="no progress bar")
    job.set_defaults(run=_run, passes_unknown=True)

    assets = commands.add_parser("assets", help="fonts, tokenizer and corpora the renderer uses")
    assets.add_argument("action", choices=["fetch", "list", "path"], nargs="?", default="list")
    assets.set_defaults(run=_assets)
    return parser


class JobMissing(RuntimeError):
    """``run`` without the ``job`` extra installed."""


def _job_errors() -> tuple[type[Exception], ...]:
    """The render job's errors that mean a mistake to fix (none when the job is not installed)."""
    try:
        from pixeltext_render.job.dask_cluster import DaskUnavailable
        from pixeltext_render.job.readers.files import CorpusChanged
        from pixeltext_render.job.shards import JobConflict
    except ImportError:
        return ()
    return (CorpusChanged, DaskUnavailable, JobConflict)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    passes_unknown = getattr(args, "passes_unknown", False)
    if unknown and not passes_unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    # Beam is chatty (and warns about optional cloud libraries when imported): errors only,
    # unless PIXELTEXT_LOG_LEVEL says otherwise. Set before anything imports Beam.
    level = os.environ.get("PIXELTEXT_LOG_LEVEL", "ERROR").upper()
    logging.basicConfig(level=level)
    for name in ("", "apache_beam"):
        logging.getLogger(name).setLevel(level)

    from pixeltext_render.assets import AssetError
    from pixeltext_render.fonts import FontError

    # (only ``run`` imports the job, and with it Beam: half a second the other commands skip)
    job_errors = _job_errors() if args.command == "run" else ()
    refused = (AssetError, FontError, JobMissing, OSError, ValueError, *job_errors)
    try:
        return args.run(args, unknown) if passes_unknown else args.run(args)
    except refused as error:
        print(f"pixeltext-render {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
