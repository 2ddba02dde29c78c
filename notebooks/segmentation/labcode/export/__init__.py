# Your copy of the course library: labcode/export/__init__.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""ONNX export: the plain graph by default (:func:`export_onnx`), the folded one as an option (:mod:`.fold`), and
the onnxruntime-against-PyTorch parity check (:func:`check_onnx_parity`)."""

from labcode.export.fold import NearestUpsampleConv, fold_nearest_upsampling
from labcode.export.onnx_export import INPUT_NAME, OUTPUT_NAME, ExportError, check_onnx_parity, export_onnx

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "ExportError", "NearestUpsampleConv", "check_onnx_parity", "export_onnx",
           "fold_nearest_upsampling"]
