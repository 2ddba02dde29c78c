# Your copy of the course library: labcode/commands/test.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""``python -m labcode test``: evaluate a model on whole areas, or segment a single photo.

``--modelpath`` is an ONNX model (``best.onnx``) or a training checkpoint (``best.pt``). With ``--areas-test`` the
per-class F1 and IoU, the macro F1 and the mIoU are printed and saved as JSON; with ``--image`` a PNG shows the photo,
its colourised prediction at the photo's own resolution and the legend.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from labcode.commands.options import ArgumentParser, image_side, non_negative_int, positive_int


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m labcode test", description=__doc__)
    parser.add_argument("--modelpath", type=Path, required=True, help="ONNX model or training checkpoint")
    parser.add_argument("--model", default=None, help="accepted for compatibility; the model file says it all")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--areas-test", "--areas_test", nargs="+", help="areas to evaluate, e.g. 5a 5b")
    what.add_argument("--image", type=Path, help="a photo to segment")
    parser.add_argument("--datadir", default=None, help="data set root (default: $LABCODE_DATADIR or the "
                        "generated data set)")
    parser.add_argument("--img-size", "--img_size", type=image_side, default=None,
                        help="areas: resize to this square size (default: native resolution)")
    parser.add_argument("--batch-size", "--batch_size", type=positive_int, default=1, help="areas: images per batch")
    parser.add_argument("--num-workers", "--num_workers", type=non_negative_int, default=2)
    parser.add_argument("--max-size", "--max_size", type=positive_int, default=None,
                        help="image: predict on a copy whose longer side is at most this, labels brought back")
    parser.add_argument("--out", type=Path, default=None,
                        help="metrics JSON (areas) or figure PNG (image); default next to the model / the image")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from labcode.infer import load_segmenter, segment_image_file
    from labcode.scoring import evaluate_areas, format_metrics_table

    if args.image is not None:
        from labcode.infer import read_image

        read_image(args.image)  # a bad image fails before the model is loaded
        segmenter = load_segmenter(args.modelpath)
        result = segment_image_file(segmenter, args.image, args.out, max_size=args.max_size)
        width, height = result["size"]
        print(f"segmented {result['image']} ({width}x{height})")
        for name, share in sorted(result["fractions"].items(), key=lambda item: -item[1]):
            if share > 0:  # the classes present
                print(f"  {name:<10} {100 * share:5.1f} %")
        print(f"figure: {result['figure']}\nmask:   {result['mask']}")
        return 0

    from labcode.data import default_datadir

    datadir = Path(args.datadir) if args.datadir else default_datadir()
    segmenter = load_segmenter(args.modelpath)
    result = evaluate_areas(segmenter, datadir, args.areas_test, img_size=args.img_size,
                            batch_size=args.batch_size, num_workers=args.num_workers)
    out = args.out or args.modelpath.with_name(f"{args.modelpath.stem}_test_{'_'.join(args.areas_test)}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"{args.modelpath} on areas {' '.join(args.areas_test)} ({result['images']} images)")
    print(format_metrics_table(result))
    print(f"metrics: {out}")
    return 0
