"""labcode: the library of the semantic segmentation lab (Stanford 2D-3D-S, PyTorch).

What you write in it: the exercises of three files, ``labcode/transforms.py`` (the augmentation
pipeline, notebook 2), ``labcode/unet.py`` (the UNet, notebook 3) and ``labcode/stats.py`` (the
class weights, notebook 4). In your copy each exercise is a ``raise NotImplementedError`` under an
EXERCISE comment naming its question, until you replace it with your code; ``python -m
labcode.check`` checks them. The other modules at this level are the lab's, to read and use,
one per chapter (data, models, losses, metrics, training, inference, figures); the folders
(storage, runtime, export, serving, commands, synth) hold the machinery behind them.

Importing the package only sets two environment variables, before albumentations or
onnxruntime can be imported by any submodule: no update check over the network and no
telemetry. Submodules are imported on demand (``from labcode.data import StanfordDataset``).
"""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
