# Your copy of the course library: labcode/commands/view.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""``python -m labcode view``: show an ONNX graph in netron, served on localhost.

Open the printed URL in a browser (on a remote machine, forward the port: ``ssh -L 8080:localhost:8080 ...``).
Ctrl-C stops the server.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from labcode.commands.options import ArgumentParser, port


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m labcode view", description=__doc__)
    parser.add_argument("model", type=Path, help="ONNX model to show")
    parser.add_argument("--port", type=port, default=8080, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--no-wait", action="store_true", help="start, print the URL and stop at once")
    return parser


def start_viewer(path: Path, port: int) -> str:
    """Serve ``path`` with netron on 127.0.0.1 and return its URL (the server runs in a background thread)."""
    import netron

    if not path.is_file():
        raise FileNotFoundError(f"model not found: {path}")
    host, port = netron.start(str(path), address=("127.0.0.1", port), browse=False)
    return f"http://{host}:{port}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import netron

    url = start_viewer(args.model, args.port)
    print(f"netron shows {args.model} at {url}")
    if args.no_wait:
        netron.stop()
        return 0
    print("press Ctrl-C to stop")
    netron.wait()
    return 0
