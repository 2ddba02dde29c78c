"""Score one submitted ONNX model on the hidden test set: what runs inside the sandbox (numpy and onnxruntime only).

The grader packs the hidden set beforehand (images resized to the evaluation size, labels decoded) into one ``.npz``
bound read-only into the sandbox; this script never sees the data set's files. It prints one JSON object:

- ``{"ok": true, "confusion": K x K counts, "shareable": {index: base64 uint8 labels}, "seconds": ...}``, or
- ``{"ok": false, "reason": "..."}`` for a model that cannot be scored (unreadable, wrong input or output, wrong
  number of classes).

A model that runs too long or takes too much memory is stopped by the sandbox, not here.

Usage: ``python score_model.py MODEL DATA.npz NUM_CLASSES [--threads N] [--batch B]``.
"""

import argparse
import base64
import json
import sys
import time

import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def short(err: Exception) -> str:
    """ONNX Runtime's message without the C++ source location it starts with."""
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "onnxruntime::" in message and ") " in message:
        message = message.rsplit(") ", 1)[1]
    return message[:300]


def fail(reason: str) -> int:
    print(json.dumps({"ok": False, "reason": reason}))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("data")
    parser.add_argument("num_classes", type=int)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args(argv)
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    started = time.perf_counter()
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - any load failure is the model's
        return fail(f"ONNX Runtime cannot load the model: {short(err)}")
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        return fail(f"the model should take one (batch, 3, height, width) input, it takes "
                    f"{[(i.name, i.shape) for i in inputs]}")
    data = np.load(args.data)
    images, masks, shareable = data["images"], data["masks"], set(data["shareable"].tolist())
    k = args.num_classes
    confusion = np.zeros((k, k), dtype=np.int64)
    kept = {}
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
        predicted = logits.argmax(axis=1).astype(np.uint8)
        truth = masks[start:start + len(batch)]
        confusion += np.bincount(truth.reshape(-1).astype(np.int64) * k + predicted.reshape(-1),
                                 minlength=k * k).reshape(k, k)
        for offset, labels in enumerate(predicted):
            if start + offset in shareable:
                kept[str(start + offset)] = base64.b64encode(labels.tobytes()).decode()
    print(json.dumps({"ok": True, "confusion": confusion.tolist(), "shareable": kept,
                      "shape": list(images.shape[1:3]), "seconds": round(time.perf_counter() - started, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
