"""Command line: ``python -m onnx_export clip --model ViT-B-32 --pretrained laion2b_s34b_b79k --out DIR``.

Writes a verified model bundle and prints its parity report. Exit codes: 0 written, 1 the export
failed or was refused (nothing written), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from vtr_qdrant.errors import VtrError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m onnx_export`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m onnx_export",
        description="Export open_clip models to vtr-qdrant model bundles (ONNX towers + tokenizer + manifest).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser(
        "clip",
        help="export an open_clip model (hub tag or local checkpoint)",
        description="Export an open_clip model's image and text towers to a bundle folder, verified against torch.",
    )
    c.add_argument("--model", required=True,
                   help="open_clip architecture, e.g. ViT-B-32 (see open_clip.list_models()), or hf-hub:ORG/REPO, local-dir:PATH")
    src = c.add_mutually_exclusive_group(required=False)  # hf-hub:/local-dir: models need neither
    src.add_argument("--pretrained", help="open_clip pretrained tag, e.g. laion2b_s34b_b79k (downloads from the hub)")
    src.add_argument("--checkpoint", help="local checkpoint file of the same architecture (no network needed)")
    c.add_argument("--out", required=True, help="bundle folder to create (must be absent or empty)")
    c.add_argument("--name", help="bundle name (default: MODEL/PRETRAINED or MODEL/<checkpoint stem>)")
    c.add_argument("--fp16", action="store_true", help="float16 graphs for the GPU path (fp32 inputs/outputs)")
    c.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of the image tower (CPU path)")
    c.add_argument("--int8-text", action="store_true",
                   help="dynamic int8 quantisation of the text tower (refused below cosine 0.999 to fp32)")
    c.add_argument("--opset", type=int, default=18, help="ONNX opset, >= 17 (default 18)")
    c.add_argument("--opt-level", choices=["disable", "basic", "extended", "all"],
                   help="save graphs pre-optimised by onnxruntime at this level (above basic: hardware-specific)")
    c.add_argument("--min-cosine", type=float, default=0.9999,
                   help="refuse the export below this torch-vs-ONNX cosine (default 0.9999)")
    c.add_argument("--exporter", choices=["auto", "dynamo", "legacy"], default="auto",
                   help="torch.onnx exporter (default auto: dynamo, falling back to legacy)")
    c.add_argument("--fuse", action="store_true",
                   help="fuse attention, residual+LayerNorm and bias+GELU into onnxruntime contrib ops "
                        "(default: plain ONNX graphs)")
    c.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    c.add_argument("--cache-dir", help="open_clip download cache folder")
    c.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        for noisy in ("onnx_ir", "onnxscript", "torch.onnx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        from vtr_qdrant._optional import require

        require("torch", "export", purpose="exporting models")
        require("open_clip", "export", purpose="exporting open_clip models")
        from .pretrained import export_pretrained

        report = export_pretrained(
            args.model,
            pretrained=args.pretrained,
            checkpoint=args.checkpoint,
            out_dir=args.out,
            name=args.name,
            cache_dir=args.cache_dir,
            fp16=args.fp16,
            int8=args.int8,
            int8_text=args.int8_text,
            opset=args.opset,
            opt_level=args.opt_level,
            min_cosine=args.min_cosine,
            method=args.exporter,
            overwrite=args.overwrite,
            fuse=args.fuse,
        )
    except VtrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: no bundle was written", file=sys.stderr)
        return 130
    print(report.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
