"""Run one submitted ONNX model on the hidden images: what runs inside the sandbox (numpy, onnx, onnxruntime only).

The model is the only thing of the submission here, and it gets nothing to read but its inputs: the grader writes
to this script's standard input one ``.npz`` holding the model's bytes (``model``) and the hidden images (``images``,
``N x H x W x 3`` uint8, already resized), and no file at all sits beside it. The masks never enter the sandbox: the
grader compares the labels this script returns with them, outside.

The model is loaded from its bytes. A model whose tensors name external data is refused before ONNX Runtime sees it
(data outside the model is the way a model could read a file of the sandbox as its weights); a model has to be
exported with ``external_data=False``, one self-contained file.

Standard output: one JSON line, then, when ``"ok"`` is true, the predicted labels as a ``.npy`` array (``N x H x W``
uint8), read by the grader with ``allow_pickle=False``:

- ``{"ok": true, "seconds": ...}`` followed by the labels, or
- ``{"ok": false, "reason": "..."}`` for a model that cannot be run (unreadable, external data, wrong input or
  output, wrong number of classes).

A model that runs too long or takes too much memory is stopped by the sandbox, not here.

Usage: ``python score_model.py NUM_CLASSES [--threads N] [--batch B] < PAYLOAD.npz`` (the grader passes this file's
text with ``python -I -c``, so that no file of the grader's is bound into the sandbox either).
"""

import argparse
import io
import json
import sys
import time

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

#: What a model with external data is told.
EXTERNAL_DATA = ("the model keeps tensors in external data files; only a self-contained model can be scored: "
                 "export with external_data=False (one .onnx file)")


def short(err: Exception) -> str:
    """ONNX Runtime's message without the C++ source location it starts with."""
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "onnxruntime::" in message and ") " in message:
        message = message.rsplit(") ", 1)[1]
    return message[:300]


def answer(header: dict, labels: np.ndarray | None = None) -> int:
    array = io.BytesIO()
    if labels is not None:
        np.save(array, labels, allow_pickle=False)
    sys.stdout.buffer.write(json.dumps(header).encode() + b"\n" + array.getvalue())
    sys.stdout.buffer.flush()
    return 0


def fail(reason: str) -> int:
    return answer({"ok": False, "reason": reason})


def _graph_tensors(graph) -> list:
    """Every tensor a graph holds: initializers, sparse ones, node attributes, and those of its subgraphs."""
    tensors = list(graph.initializer)
    for sparse in graph.sparse_initializer:
        tensors += [sparse.values, sparse.indices]
    for node in graph.node:
        tensors += _attribute_tensors(node.attribute)
    return tensors


def _attribute_tensors(attributes) -> list:
    tensors = []
    for attribute in attributes:
        if attribute.HasField("t"):
            tensors.append(attribute.t)
        tensors += list(attribute.tensors)
        if attribute.HasField("sparse_tensor"):
            tensors += [attribute.sparse_tensor.values, attribute.sparse_tensor.indices]
        for sparse in attribute.sparse_tensors:
            tensors += [sparse.values, sparse.indices]
        if attribute.HasField("g"):
            tensors += _graph_tensors(attribute.g)
        for graph in attribute.graphs:
            tensors += _graph_tensors(graph)
    return tensors


def uses_external_data(model_bytes: bytes) -> bool:
    """Whether any tensor of the model (its subgraphs and functions included) names data outside the model."""
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(model_bytes)
    tensors = _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            tensors += _attribute_tensors(node.attribute)
    return any(t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data) > 0 for t in tensors)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("num_classes", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    payload = np.load(io.BytesIO(sys.stdin.buffer.read()), allow_pickle=False)
    model_bytes, images = payload["model"].tobytes(), payload["images"]
    del payload
    try:
        external = uses_external_data(model_bytes)
    except Exception as err:  # noqa: BLE001 - any parse failure (nesting too deep included) is the model's
        return fail(f"ONNX Runtime cannot load the model: it is not a readable ONNX file ({short(err)})")
    if external:
        return fail(EXTERNAL_DATA)
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - any load failure is the model's
        return fail(f"ONNX Runtime cannot load the model: {short(err)}")
    del model_bytes
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        return fail(f"the model should take one (batch, 3, height, width) input, it takes "
                    f"{[(i.name, i.shape) for i in inputs]}")
    k = args.num_classes
    labels = np.empty(images.shape[:3], dtype=np.uint8)
    for start in range(0, len(images), args.batch):
        chunk = images[start:start + args.batch].astype(np.float32) / 255.0
        batch = ((chunk - MEAN) / STD).transpose(0, 3, 1, 2).copy()
        try:
            logits = session.run(None, {inputs[0].name: batch})[0]
        except Exception as err:  # noqa: BLE001
            return fail(f"the model fails on a batch of shape {list(batch.shape)}: {short(err)}")
        expected = (len(batch), k, *batch.shape[2:])
        if getattr(logits, "shape", None) != expected:
            return fail(f"the model outputs shape {list(np.shape(logits))} for an input of shape {list(batch.shape)}; "
                        f"expected {list(expected)} (one score per class and pixel, {k} classes)")
        labels[start:start + len(batch)] = logits.argmax(axis=1)
    return answer({"ok": True, "seconds": round(time.perf_counter() - started, 2)}, labels)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
