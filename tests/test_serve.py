"""The web API: a real uvicorn server in a subprocess, posted real PNG/JPEG files, bad inputs and a concurrent burst.

Expected masks are computed in the test with onnxruntime directly on the image decoded by the test, so a served
answer is checked pixel by pixel, not only for its size.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from labcode.classes import CLASS_COLORS, CLASSES
from labcode.transforms import preprocess

REPO = Path(__file__).resolve().parents[1]
MAX_UPLOAD = 2**20  # the test server's limits: 1 MiB, 1 megapixel, photos above 512 px segmented downscaled
MAX_PIXELS = 1_000_000
MAX_SIDE = 512


# --------------------------------------------------------------------------------------------------------------------
# Helpers (also used by test_serve_browser.py)
# --------------------------------------------------------------------------------------------------------------------

def tiny_model(tmp_path_factory) -> Path:
    """A tiny untrained UNet exported with the library, once per test session."""
    path = tmp_path_factory.getbasetemp() / "serve_model" / "tiny_unet.onnx"
    if not path.exists():
        import torch

        from labcode.export import export_onnx
        from labcode.models import build_model

        torch.manual_seed(0)
        model = build_model("unet", len(CLASSES), num_blocks=2, base_chan=4)
        with torch.no_grad():  # spread the BatchNorm statistics so that the untrained net predicts several classes
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.05, 0.5)
        export_onnx(model.eval(), path)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(model: Path, log_path: Path, *options: str) -> Iterator[str]:
    """``python -m labcode serve`` on a free loopback port; yields its URL once /health answers, always stops it."""
    with server_process(model, log_path, *options) as (url, _):
        yield url


@contextmanager
def server_process(model: Path, log_path: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """As :func:`running_server`, yielding the URL and the server's process."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "labcode", "serve", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu", *options]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server did not answer /health within 90 s:\n{log_path.read_text()}")
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random RGB picture (large regions, like a photo rather than noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header announces ``width`` x ``height`` RGB pixels but whose data is a few bytes: decoding it in
    full fails, so a 413 (rather than 400) shows that the size was refused from the header alone."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def decode_png(content: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(content))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB"))


# --------------------------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory)


@pytest.fixture(scope="module")
def reference(model_path):
    """Labels predicted by onnxruntime called directly (CPU) on an RGB array."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def labels(rgb: np.ndarray) -> np.ndarray:
        return session.run(None, {name: preprocess(rgb)[None]})[0][0].argmax(axis=0)

    return labels


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with running_server(model_path, log, "--max-upload-mb", str(MAX_UPLOAD / 2**20), "--max-pixels",
                        str(MAX_PIXELS), "--max-side", str(MAX_SIDE), "--workers", "2") as url:
        yield url


def post(url: str, data: bytes, filename: str = "photo.png", **params) -> httpx.Response:
    return httpx.post(f"{url}/segment", files={"file": (filename, data)}, params=params, timeout=60)


def _packed(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def only_legend_colours(picture: np.ndarray) -> bool:
    """Whether every pixel of an RGB picture has one of the class colours."""
    return bool(np.isin(_packed(picture), _packed(CLASS_COLORS)).all())


# --------------------------------------------------------------------------------------------------------------------
# Good uploads
# --------------------------------------------------------------------------------------------------------------------

CASES = [  # (format, mode, width, height)
    ("PNG", "RGB", 64, 64),
    ("PNG", "RGBA", 37, 53),
    ("PNG", "L", 200, 120),
    ("PNG", "P", 90, 71),
    ("PNG", "RGB", 3, 2),
    ("JPEG", "RGB", 300, 200),
    ("JPEG", "L", 129, 257),
    ("JPEG", "CMYK", 160, 96),
    ("JPEG", "RGB", 500, 375),
]


@pytest.mark.parametrize("fmt, mode, width, height", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}x{c[3]}" for c in CASES])
def test_mask_has_input_size_legend_colours_and_model_labels(server, reference, fmt, mode, width, height):
    data = encode(photo(width, height, seed=width).convert(mode), fmt)
    response = post(server, data, f"photo.{fmt.lower()}", view="mask")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    mask = decode_png(response.content)
    assert mask.shape == (height, width, 3)
    assert only_legend_colours(mask)
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # the test's own decoding of the same file
    expected = CLASS_COLORS[reference(rgb)]
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_overlay_blends_the_colours_over_known_pixels(server, reference, alpha):
    data = encode(photo(120, 90, seed=3), "JPEG", quality=90)
    response = post(server, data, "photo.jpg", alpha=alpha)  # view=overlay is the default
    assert response.status_code == 200, response.text
    got = decode_png(response.content).astype(np.float64)
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.float64)
    labels = reference(rgb.astype(np.uint8))
    blended = (1 - alpha) * rgb + alpha * CLASS_COLORS[labels]
    expected = np.where((labels > 0)[..., None], blended, rgb)  # <UNK> pixels keep the photo
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1.0
    assert len(np.unique(labels)) > 1  # the tiny model predicts several classes, so the blend is really exercised


@pytest.mark.parametrize("orientation, turns", [(3, 2), (6, -1), (8, 1)])
def test_exif_rotated_jpeg_is_segmented_upright(server, reference, orientation, turns):
    img = photo(80, 48, seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation  # 3: upside down, 6: turn clockwise to view, 8: turn counter-clockwise
    data = encode(img, "JPEG", quality=95, exif=exif.tobytes())
    response = post(server, data, "rotated.jpg", view="mask")
    assert response.status_code == 200, response.text
    mask = decode_png(response.content)
    stored = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))  # pixels as stored, not rotated
    upright = np.ascontiguousarray(np.rot90(stored, k=turns))
    assert mask.shape == upright.shape
    np.testing.assert_array_equal(mask, CLASS_COLORS[reference(upright)])


def test_json_answer_has_size_fractions_and_legend(server, reference, model_path):
    data = encode(photo(150, 110, seed=7), "PNG")
    response = post(server, data, format="json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["width"], body["height"], body["model"]) == (150, 110, model_path.name)
    labels = reference(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    counts = np.bincount(labels.ravel(), minlength=len(CLASSES))
    assert [c["name"] for c in body["classes"]] == list(CLASSES)
    assert [c["index"] for c in body["classes"]] == list(range(len(CLASSES)))
    assert [bytes.fromhex(c["color"][1:]) for c in body["classes"]] == [bytes(c) for c in CLASS_COLORS]
    np.testing.assert_allclose([c["fraction"] for c in body["classes"]], counts / labels.size, atol=1e-12)
    assert sum(c["fraction"] for c in body["classes"]) == pytest.approx(1.0)


def test_large_photo_is_segmented_downscaled_but_answered_at_full_size(server):
    width, height = 900, 700  # above --max-side 512, below the pixel limit
    data = encode(photo(width, height, seed=11), "JPEG", quality=70)
    response = post(server, data, "large.jpg", view="mask")
    assert response.status_code == 200, response.text
    mask = decode_png(response.content)
    assert mask.shape == (height, width, 3)
    assert only_legend_colours(mask)


def test_health_describes_model_input_limits_and_legend(server, model_path):
    body = httpx.get(f"{server}/health").json()
    assert body["status"] == "ok" and body["model"] == model_path.name
    assert body["providers"] == ["CPUExecutionProvider"]
    assert body["input"]["name"] == "image" and body["input"]["shape"][1] == 3
    assert all(isinstance(dim, str) for dim in (body["input"]["shape"][0], *body["input"]["shape"][2:]))  # dynamic
    assert body["limits"] == {"max_upload_bytes": MAX_UPLOAD, "max_pixels": MAX_PIXELS, "max_side": MAX_SIDE}
    assert [(c["name"], c["color"]) for c in body["classes"]] == [
        (name, "#%02x%02x%02x" % tuple(colour)) for name, colour in zip(CLASSES, CLASS_COLORS)]


def test_page_and_openapi_docs_are_served(server):
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'type="file"' in page.text and "segment?view=" in page.text and "http" not in page.text.split("<script>")[1]
    schema = httpx.get(f"{server}/openapi.json").json()
    assert {"/segment", "/health"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/segment"]["post"]["requestBody"]["content"]
    docs = httpx.get(f"{server}/docs")
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text and "cdn" not in docs.text
    script = httpx.get(f"{server}/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000  # Swagger UI itself, served locally


# --------------------------------------------------------------------------------------------------------------------
# Bad uploads
# --------------------------------------------------------------------------------------------------------------------

def _multipart_stream(filename: str, size: int, boundary: str, sent: list[int]) -> Iterator[bytes]:
    """A multipart body of ``size`` zero bytes, yielded in pieces (so sent chunked); ``sent`` counts them."""
    yield (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
           "Content-Type: application/octet-stream\r\n\r\n").encode()
    for _ in range(size // 65536):
        sent[0] += 65536
        yield b"\0" * 65536
    yield f"\r\n--{boundary}--\r\n".encode()


@pytest.mark.parametrize("name, data, status, words", [
    ("notes.txt", b"this is not an image at all", 400, "notes.txt is not an image"),
    ("empty.png", b"", 400, "empty.png is empty"),
    ("cut.png", encode(photo(64, 64), "PNG")[:300], 400, "cannot decode cut.png"),
    ("pixels.png", encode(Image.new("RGB", (1100, 1000), (90, 60, 30)), "PNG"), 413, "1100x1000 = 1100000 pixels"),
    ("header.png", png_header_only(5000, 5000), 413, "5000x5000 = 25000000 pixels"),
    ("bomb.png", png_header_only(30000, 30000), 413, "decompression bomb"),
    ("slightly.bin", b"\0" * (MAX_UPLOAD + 10), 413, "slightly.bin is larger than the limit"),
    ("big.bin", b"\0" * (3 * MAX_UPLOAD), 413, "larger than the limit"),
], ids=["text", "empty", "truncated", "pixels", "header-only", "bomb", "bytes-just-over", "bytes"])
def test_bad_uploads_get_clear_errors(server, name, data, status, words):
    response = post(server, data, name)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]


def test_streamed_upload_is_cut_off_at_the_byte_limit(server):
    boundary, sent, size = "labcodeboundary", [0], 256 * MAX_UPLOAD
    response = httpx.post(f"{server}/segment", content=_multipart_stream("stream.bin", size, boundary, sent),
                          headers={"content-type": f"multipart/form-data; boundary={boundary}"}, timeout=60)
    assert response.status_code == 413, response.text
    assert "larger than the limit" in response.json()["detail"]
    print(f"streamed upload refused after {sent[0] / 2**20:.1f} MiB were sent")
    assert sent[0] < size // 4  # refused while the body was arriving, not after reading all of it


def test_malformed_requests_get_4xx_and_server_stays_up(server):
    assert httpx.post(f"{server}/segment").status_code == 422  # no file field
    assert post(server, encode(photo(20, 20), "PNG"), format="xml").status_code == 422
    assert post(server, encode(photo(20, 20), "PNG"), alpha=2).status_code == 422
    assert httpx.get(f"{server}/segment").status_code == 405
    assert httpx.get(f"{server}/health").status_code == 200


# --------------------------------------------------------------------------------------------------------------------
# Concurrency
# --------------------------------------------------------------------------------------------------------------------

def test_burst_of_concurrent_requests_all_succeed(server, reference):
    sizes = [(40 + 37 * i, 30 + 23 * i) for i in range(10)]  # distinct sizes: a mixed-up answer would show
    files = [encode(photo(w, h, seed=i), "PNG") for i, (w, h) in enumerate(sizes)]
    expected = [CLASS_COLORS[reference(np.asarray(Image.open(io.BytesIO(f)).convert("RGB")))] for f in files]
    local = threading.local()

    def one(index: int) -> tuple[int, int, bytes]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=server, timeout=120)
        k = index % len(files)
        response = local.client.post("/segment", files={"file": (f"{k}.png", files[k])}, params={"view": "mask"})
        return k, response.status_code, response.content

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(50)))
    elapsed = time.monotonic() - started
    assert [status for _, status, _ in results] == [200] * 50
    for k, _, content in results:
        np.testing.assert_array_equal(decode_png(content), expected[k])
    print(f"50 requests over 8 connections in {elapsed:.2f} s")


def test_model_is_loaded_once_for_many_requests(model_path, monkeypatch):
    import anyio

    import labcode.infer
    from labcode.serving.serve import create_app

    loads = []

    class CountingSegmenter(labcode.infer.OnnxSegmenter):
        def __init__(self, *args, **kwargs):
            loads.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(labcode.infer, "OnnxSegmenter", CountingSegmenter)
    app = create_app(model_path, providers=["CPUExecutionProvider"])
    sizes = (16, 24, 40)

    async def requests_in_process() -> list[tuple[int, tuple[int, int]]]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            answers = [await client.post("/segment", files={"file": ("a.png", encode(photo(n, n), "PNG"))})
                       for n in sizes]
        return [(a.status_code, Image.open(io.BytesIO(a.content)).size) for a in answers]

    assert anyio.run(requests_in_process) == [(200, (n, n)) for n in sizes]
    assert len(loads) == 1


@pytest.mark.parametrize("argv, words", [
    (["--model", "{tmp}/missing.onnx"], "missing.onnx: no such file"),
    (["--model", "{tmp}/notes.onnx"], "cannot load ONNX model"),
    (["--model", "{tmp}/notes.onnx", "--port", "70000"], "--port 70000"),
    (["--model", "{tmp}/notes.onnx", "--workers", "0"], "--workers must be positive"),
])
def test_command_reports_bad_arguments_as_one_line(tmp_path, capsys, argv, words):
    from labcode.commands.cli import main

    (tmp_path / "notes.onnx").write_text("not a model")
    status = main(["serve", *(a.format(tmp=tmp_path) for a in argv)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: ") and words in err and "Traceback" not in err


def test_command_refuses_a_model_with_another_number_of_classes(tmp_path, capsys):
    import torch

    from labcode.commands.cli import main
    from labcode.export import export_onnx
    from labcode.models import build_model

    torch.manual_seed(0)
    path = export_onnx(build_model("unet", 5, num_blocks=1, base_chan=2).eval(), tmp_path / "five.onnx",
                       classes=list("abcde"))
    assert main(["serve", "--model", str(path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: model {path} outputs 5 classes but the course's class list has 14"), err
    assert err.count("\n") == 1 and "Traceback" not in err


# --------------------------------------------------------------------------------------------------------------------
# Memory per request, security headers
# --------------------------------------------------------------------------------------------------------------------

def _memory_mb(pid: int, field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (resident high-water mark) of a process, in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


#: Bounds of the server's peak memory above its idle memory, with the default limits (40 Mpx, --max-side 512,
#: --workers 2); book/serving.md documents them.
ONE_UPLOAD_MB, FOUR_UPLOADS_MB = 500, 900


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the memory of the server from /proc")
@pytest.mark.parametrize("concurrent, bound", [(1, ONE_UPLOAD_MB), (4, FOUR_UPLOADS_MB)])
def test_memory_for_the_largest_accepted_image_is_bounded(model_path, tmp_path, concurrent, bound):
    big = encode(Image.new("RGB", (6300, 6300), (120, 90, 60)), "PNG")  # 39.7 Mpx, under the default 40 Mpx limit
    assert len(big) < 2**20
    with server_process(model_path, tmp_path / "server.log") as (url, process):  # the default limits
        assert post(url, encode(photo(64, 48), "PNG")).status_code == 200  # warm up: lazy imports, first run
        idle = _memory_mb(process.pid, "VmRSS")

        def one(view: str) -> httpx.Response:
            return httpx.post(f"{url}/segment", files={"file": ("big.png", big)}, params={"view": view}, timeout=600)

        with ThreadPoolExecutor(max_workers=concurrent) as pool:
            answers = list(pool.map(one, ["overlay", "mask", "overlay", "mask"][:concurrent]))
        peak = _memory_mb(process.pid, "VmHWM")
    print(f"{concurrent} upload(s) of 6300x6300: peak {peak:.0f} MB, idle {idle:.0f} MB, "
          f"{peak - idle:.0f} MB above idle (bound {bound} MB)")
    assert [a.status_code for a in answers] == [200] * concurrent, answers[0].text
    with Image.open(io.BytesIO(answers[-1].content)) as answer:
        assert answer.size == (6300, 6300)
        answer.load()  # a complete, valid PNG
    assert peak - idle < bound


def test_security_headers_on_every_answer_and_a_policy_for_the_page(server):
    from labcode.serving.webpage import PAGE, PAGE_CSP

    answers = {"page": httpx.get(f"{server}/"), "health": httpx.get(f"{server}/health"),
               "segment": post(server, encode(photo(20, 20), "PNG")), "refused": post(server, b"", "empty.png"),
               "docs": httpx.get(f"{server}/docs")}
    for name, answer in answers.items():
        assert answer.headers["x-content-type-options"] == "nosniff", name
        assert answer.headers["x-frame-options"] == "DENY", name
        assert answer.headers["referrer-policy"] == "no-referrer", name
    policy = answers["page"].headers["content-security-policy"]
    assert policy == PAGE_CSP and "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "connect-src 'self'" in policy and "img-src blob:" in policy
    script = PAGE.split("<script>")[1].split("</script>")[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy  # the page's own script, and only it, may run
    assert "content-security-policy" not in answers["docs"].headers  # Swagger UI's start-up script is inline
