# Your copy of the course library: labcode/commands/serve.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""``python -m labcode serve``: serve an exported ONNX model behind a web API and page (FastAPI + uvicorn).

Open http://HOST:PORT/ for the page, /docs for the API; ``POST /segment`` takes an image upload (field ``file``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from labcode.commands.options import ArgumentParser, non_negative_int, port, positive_float, positive_int
from labcode.errors import LabError

PROVIDERS = {
    "auto": None,
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


def build_parser() -> argparse.ArgumentParser:
    from labcode.serving.serve import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, DEFAULT_MAX_UPLOAD_BYTES

    parser = ArgumentParser(prog="python -m labcode serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="the exported .onnx file")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=port, default=8000, help="port to listen on")
    parser.add_argument("--device", choices=sorted(PROVIDERS), default="auto",
                        help="ONNX Runtime providers: cuda then cpu when a GPU is usable (auto), or only one")
    parser.add_argument("--max-upload-mb", type=positive_float, default=DEFAULT_MAX_UPLOAD_BYTES / 2**20,
                        help="largest accepted upload in MiB (413 beyond)")
    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS,
                        help="largest accepted width x height (413 beyond)")
    parser.add_argument("--max-side", type=non_negative_int, default=DEFAULT_MAX_SIDE,
                        help="segment larger photos on a copy downscaled to this longer side (0: never)")
    parser.add_argument("--workers", type=positive_int, default=2, help="uploads processed at the same time")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn's log level")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.model.is_file():
        raise LabError(f"--model {args.model}: no such file (export one with `python -m labcode export`)")

    import uvicorn

    from labcode.serving.serve import create_app

    app = create_app(args.model, providers=PROVIDERS[args.device], max_upload_bytes=int(args.max_upload_mb * 2**20),
                     max_pixels=args.max_pixels, max_side=args.max_side or None, workers=args.workers)
    url = f"http://{args.host}:{args.port}"
    print(f"serving {args.model.name}: page {url}/ , API docs {url}/docs", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0
