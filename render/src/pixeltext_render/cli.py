"""``pixeltext-render``: preview a rendering, manage assets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


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
    renderer = Renderer(_load_config(args.config), args.tokenizer)
    if args.text_pair is not None:
        strips = [renderer.render_pair(text, args.text_pair)]
    else:
        strips = renderer.render(text).strips
    preview_image(strips, renderer.config.patch_size, args.patches_per_row, args.scale).save(args.out)
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
        print(f"{len(ASSETS)} assets ready in {assets_dir()} ({fetched} fetched)", file=sys.stderr)
    elif args.action == "path":
        print(assets_dir())
    else:
        missing = {a.name for a in missing_assets()}
        for name in sorted(ASSETS):
            print(f"{'missing' if name in missing else 'ok':8} {name}")
        return 1 if missing else 0
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pixeltext-render", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    preview = commands.add_parser("preview", help="render a text and write a readable PNG")
    preview.add_argument("--text", help="the text to render")
    preview.add_argument("--file", help="read the text from this file (UTF-8)")
    preview.add_argument("--text-pair", help="render --text and this as a sentence pair")
    preview.add_argument("--config", help="render config as JSON or YAML (RenderConfig fields)")
    preview.add_argument(
        "--tokenizer", default="sentencepiece", help="bytes | sentencepiece[:PATH] | hf:PATH"
    )
    preview.add_argument("--out", required=True, help="PNG file to write")
    preview.add_argument("--patches-per-row", type=int, default=64, help="wrap the picture every N patches")
    preview.add_argument("--scale", type=int, default=3, help="enlarge pixels this many times")
    preview.set_defaults(run=_preview)

    assets = commands.add_parser("assets", help="fonts, tokenizer and corpora the renderer uses")
    assets.add_argument("action", choices=["fetch", "list", "path"], nargs="?", default="list")
    assets.set_defaults(run=_assets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
