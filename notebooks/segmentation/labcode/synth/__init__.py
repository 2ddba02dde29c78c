# Your copy of the course library: labcode/synth/__init__.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Offline scene generator writing the exact on-disk format of Stanford 2D-3D-S.

The real scans cannot be downloaded in the course, so the notebooks, tests and the book use rooms rendered here. The
output is laid out, named and encoded exactly like the real data set, so the same reader works on both:

    ROOT/assets/semantic_labels.json   one global list of instance names; entry 0 is "<UNK>_0_<UNK>_0_0"
    ROOT/assets/synth.json             generation parameters (absent from the real data; readers ignore it)
    ROOT/area_<A>/data/rgb/camera_<32 hex>_<roomType>_<roomNum>_frame_<k>_domain_rgb.png
    ROOT/area_<A>/data/semantic/camera_<32 hex>_<roomType>_<roomNum>_frame_<k>_domain_semantic.png

A semantic pixel (R, G, B) holds the index R*65536 + G*256 + B of its instance name, e.g. "chair_3_office_12_1"
(class_instance_roomType_roomNum_area); the value 0x0D0D0D marks pixels the scanner did not reach.

How an image is made: each area is a "building" with its own paints, floors, furniture colours and lighting, drawn
from one shared family, so a held-out area shows new rooms of the same kind. A room is a box with doors, windows,
boards and posters on its walls, beams, columns and furniture built from oriented boxes. Several camera positions
per room each take a few frames (random heading, pitch, field of view); every frame is ray cast (one z-buffer over
the room planes and the boxes, each box tested only inside its projected bounding rectangle), shaded from a key light
and ceiling lamps, then degraded with sensor noise, blur and JPEG artefacts. Like the real scans, the labels are not
perfect: a few objects are ``<UNK>``, a few instances carry a wrong class, a few frames have their labels shifted by
some pixels, and holes, edge bands or far surfaces have no data. Everything is seeded from (seed, area, room or
image), so the same parameters give byte-identical files whatever the number of workers.

The modules, in the order an image is made: ``params`` (what defines a data set), ``scene`` (materials, boxes, wall
patches, shots, rooms), ``styles`` (room recipes and each building's colours), ``furniture`` (placing things in a
room), ``layout`` (planning the rooms and shots of an area), ``textures``, ``render`` (ray casting, shading, scanner
and camera effects) and ``writer`` (planning, rendering and publishing a data set; the default data set).
"""

from labcode.synth.layout import plan_area
from labcode.synth.params import (
    AREA_WEIGHTS,
    DEFAULT_SYNTH,
    REAL_AREA_IMAGES,
    SYNTH_VERSION,
    SynthParams,
    area_image_counts,
)
from labcode.synth.render import render_frame
from labcode.synth.scene import Box, Material, Patch, Room, Shot
from labcode.synth.writer import data_home, ensure_default_dataset, generate_dataset, relabelled_codes

__all__ = [
    "AREA_WEIGHTS", "DEFAULT_SYNTH", "REAL_AREA_IMAGES", "SYNTH_VERSION", "Box", "Material", "Patch", "Room", "Shot",
    "SynthParams", "area_image_counts", "data_home", "ensure_default_dataset", "generate_dataset", "plan_area",
    "relabelled_codes", "render_frame",
]
