"""The offline scene generator: exact on-disk format (decoded here with numpy alone), determinism, class balance,
atomic publication, the default data set and the ``synth`` command."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from labcode import synth
from labcode.classes import AREAS, CLASSES
from labcode.commands.synth import main as synth_main
from labcode.errors import LabError
from labcode.synth import layout, writer

MISSING = 0x0D0D0D
NAME = re.compile(r"^camera_([0-9a-f]{32})_([A-Za-z]+)_(\d+)_frame_(\d+)_domain_(rgb|semantic)\.png$")
ENTRY = re.compile(r"^([^_]+)_(\d+)_([A-Za-z]+|<UNK>)_(\d+)_(\d)$")
SMALL = dict(areas=("1", "3", "5a"), images_per_area=3, size=64, seed=3, progress=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return synth.generate_dataset(tmp_path_factory.mktemp("synth") / "small", **SMALL)


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> Path:
    """Every area, enough images for class statistics (tiny images keep it fast)."""
    out = tmp_path_factory.mktemp("synth") / "medium"
    return synth.generate_dataset(out, images_per_area=14, size=40, seed=11, progress=False)


def png_header(path: Path) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) read from the IHDR chunk."""
    data = path.read_bytes()[:29]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    return width, height, depth, colour


def codes_of(path: Path) -> np.ndarray:
    """Integer codes R*65536 + G*256 + B of a semantic PNG (OpenCV loads BGR)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.int64)
    return bgr[..., 2] * 65536 + bgr[..., 1] * 256 + bgr[..., 0]


def entries_of(root: Path) -> list[str]:
    return json.loads((root / "assets" / "semantic_labels.json").read_text())


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def class_maps(root: Path) -> dict[str, np.ndarray]:
    """Class index per pixel of every semantic file (missing data counted as <UNK>)."""
    lut = np.array([CLASSES.index(e.split("_", 1)[0]) for e in entries_of(root)])
    maps = {}
    for path in sorted(root.glob("area_*/data/semantic/*.png")):
        codes = codes_of(path)
        maps[str(path.relative_to(root))] = np.where(codes == MISSING, 0, lut[np.where(codes == MISSING, 0, codes)])
    return maps


def test_layout_names_and_png_format(small):
    assert sorted(p.name for p in small.iterdir()) == ["area_1", "area_3", "area_5a", "assets"]
    for area in SMALL["areas"]:
        rgb = sorted((small / f"area_{area}" / "data" / "rgb").iterdir())
        semantic = sorted((small / f"area_{area}" / "data" / "semantic").iterdir())
        assert len(rgb) == len(semantic) == 3
        for path in rgb + semantic:
            match = NAME.match(path.name)
            assert match, path.name
            assert match.group(5) == path.parent.name
            assert png_header(path) == (64, 64, 8, 2)  # 8-bit RGB, no alpha
        assert [p.name.replace("_rgb.png", "") for p in rgb] == [p.name.replace("_semantic.png", "") for p in semantic]
    manifest = json.loads((small / "assets" / "synth.json").read_text())
    assert manifest["size"] == 64 and manifest["images_per_area"] == {"1": 3, "3": 3, "5a": 3}


def test_label_list_has_unknown_first_and_only_known_classes(small):
    entries = entries_of(small)
    assert entries[0] == "<UNK>_0_<UNK>_0_0"
    assert len(set(entries)) == len(entries)
    for entry in entries[1:]:
        match = ENTRY.match(entry)
        assert match, entry
        assert match.group(1) in CLASSES  # "<UNK>" or one of the 13 classes
        assert match.group(5) in {"1", "3", "5"}  # area numbers; 5a and 5b both say 5
    assert {e.split("_", 1)[0] for e in entries} >= {"wall", "floor", "ceiling", "door"}


def test_every_pixel_code_is_a_room_entry_or_missing(small, medium):
    for root in (small, medium):
        entries = entries_of(root)
        for path in root.glob("area_*/data/semantic/*.png"):
            codes = codes_of(path)
            valid = codes[codes != MISSING]
            assert valid.min() >= 1 and valid.max() < len(entries), path.name
            room = "_".join(NAME.match(path.name).group(2, 3))
            area = path.parts[-4][len("area_"):].rstrip("ab")
            for code in np.unique(valid):  # every label of a frame belongs to the room named in the file name
                parts = entries[code].split("_")
                assert "_".join(parts[2:4]) == room and parts[4] == area, (path.name, entries[code])


def test_missing_data_is_present_and_dark(medium):
    missing, rgb_sum = 0, 0.0
    for path in medium.glob("area_*/data/semantic/*.png"):
        hole = codes_of(path) == MISSING
        rgb = cv2.imread(str(path).replace("semantic", "rgb"))
        missing += hole.sum()
        rgb_sum += rgb[hole].sum()
    assert missing > 0
    assert rgb_sum / (3 * missing) < 40  # the scanner saw nothing there: nearly black


def test_class_frequencies_look_like_the_real_ones(medium):
    hist = np.zeros(len(CLASSES))
    for mask in class_maps(medium).values():
        hist += np.bincount(mask.ravel(), minlength=len(CLASSES))
    freq = hist / hist.sum()
    assert (freq[1:] > 0).all(), dict(zip(CLASSES, freq))  # every class shows up
    assert freq.argmax() == CLASSES.index("wall") and 0.25 < freq[CLASSES.index("wall")] < 0.5
    sofa = freq[CLASSES.index("sofa")]
    assert sofa < 0.025 and (freq[1:] < sofa).sum() <= 2  # among the rarest classes
    for name in ("floor", "ceiling", "door", "clutter"):
        assert freq[CLASSES.index(name)] > 0.04, name


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
    again = synth.generate_dataset(tmp_path / "again", **{**SMALL, "workers": 2})
    assert files_of(again) == files_of(small)
    other = synth.generate_dataset(tmp_path / "other", **{**SMALL, "seed": 4})
    assert files_of(other).keys() != files_of(small).keys()


def test_an_area_alone_renders_the_same_images(small, tmp_path):
    alone = synth.generate_dataset(tmp_path / "alone", **{**SMALL, "areas": ("3",)})
    assert sorted(p.name for p in alone.iterdir()) == ["area_3", "assets"]
    full, part = files_of(small), files_of(alone)
    rgb = [k for k in part if "/rgb/" in k]
    assert rgb and all(part[k] == full[k] for k in rgb)
    full_maps, part_maps = class_maps(small), class_maps(alone)  # codes shift with the label list, classes do not
    assert all(np.array_equal(part_maps[k], full_maps[k]) for k in part_maps)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failed_generation_leaves_no_dataset(tmp_path, monkeypatch, error):
    real, calls = writer._render_task, []

    def failing(task):
        calls.append(task)
        if len(calls) == 4:
            raise error("stop")
        return real(task)

    monkeypatch.setattr(writer, "_render_task", failing)
    with pytest.raises(error):
        synth.generate_dataset(tmp_path / "out", **SMALL)
    assert len(calls) == 4
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary sibling


def test_refuses_a_non_empty_folder_unless_overwriting(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(LabError, match="not empty"):
        synth.generate_dataset(out, **SMALL)
    assert (out / "notes.txt").read_text() == "keep me"
    synth.generate_dataset(out, **{**SMALL, "areas": ("6",), "images_per_area": 1}, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["area_6", "assets"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert synth.generate_dataset(empty, **{**SMALL, "images_per_area": 1}) == empty.resolve()


def test_bad_arguments_name_the_argument(tmp_path):
    with pytest.raises(LabError, match="areas"):
        synth.generate_dataset(tmp_path / "x", **{**SMALL, "areas": ("7",)})
    with pytest.raises(LabError, match="images_per_area"):
        synth.generate_dataset(tmp_path / "x", **{**SMALL, "images_per_area": {"1": 2}})
    assert not (tmp_path / "x").exists()


def test_proportional_counts_follow_the_real_areas():
    counts = synth.area_image_counts(700)
    assert list(counts) == list(AREAS) and sum(counts.values()) == 700
    assert min(counts, key=counts.get) == "3" and max(counts, key=counts.get) == "2"
    assert abs(counts["2"] - 700 * 15714 / 70496) < 1.5  # real sizes: area 2 has 15714 of the 70496 images
    assert sum(synth.area_image_counts(8).values()) == 8
    assert synth.area_image_counts(3, ("1", "5a", "5b", "6")) == {"1": 1, "5a": 1, "5b": 1, "6": 1}


def test_camera_geometry_and_labels_of_a_clean_frame():
    """An empty 6 x 6 x 3 room, a camera at its centre looking along +x with a 90 degree field of view."""
    room = synth.Room("1", "office", 1, (6.0, 6.0, 3.0))
    plain = synth.Material("paint", (0.8, 0.8, 0.8))
    room.surfaces = [plain] * 6
    for cls in ("wall", "wall", "wall", "wall", "floor", "ceiling", "table"):
        room.add(cls)
    # a box 2 m ahead and 1 m to the left (+y is the camera's left when looking along +x)
    room.boxes.append(synth.Box(6, np.array([5.0, 4.0, 1.5]), np.array([0.1, 0.5, 0.5]), 0.0, plain))
    shot = synth.Shot("0" * 32, 0, (3.0, 3.0, 1.5), yaw=0.0, pitch=0.0, roll=0.0, fov=np.pi / 2)
    rgb, label = synth.render_frame(room, shot, 64, [0], gaps=False)
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8 and label.shape == (64, 64)
    # pinhole: focal = 32 px; the box front face x=4.9 spans y in [3.5, 4.5] -> columns 32 - 32*(y-3)/1.9
    cols = [c for c in range(64) if label[32, c] == 6]
    assert cols[0] == int(np.ceil(32 - 32 * 1.5 / 1.9 - 0.5)) and cols[-1] == int(np.floor(32 - 32 * 0.5 / 1.9 - 0.5))
    assert label[32, 40] == 1  # straight ahead and right: the far wall x = 6
    assert label[0, 32] == 5 and label[63, 32] == 4  # ceiling above, floor below
    looking_left = synth.Shot("0" * 32, 1, (3.0, 3.0, 1.5), yaw=np.pi / 2, pitch=0.0, roll=0.0, fov=np.pi / 2)
    assert synth.render_frame(room, looking_left, 64, [0], gaps=False)[1][32, 32] == 3  # the wall y = 6


def test_default_dataset_is_made_once_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCODE_DATA_HOME", str(tmp_path))
    params = synth.SynthParams(size=32, images_per_area=(("2", 2), ("5b", 1)), seed=5)
    root = synth.ensure_default_dataset(progress=False, params=params, workers=1)
    assert root == tmp_path / f"synth-{synth.SYNTH_VERSION}"
    assert len(list(root.glob("area_*/data/rgb/*.png"))) == 3
    before = files_of(root)

    def no_rendering(*args, **kwargs):
        raise AssertionError("the complete data set should have been reused")

    with monkeypatch.context() as patch:
        patch.setattr(writer, "_write_into", no_rendering)
        assert synth.ensure_default_dataset(progress=False, params=params) == root
    assert files_of(root) == before
    other = synth.SynthParams(size=32, images_per_area=(("2", 1),), seed=5)  # other parameters: regenerated
    synth.ensure_default_dataset(progress=False, params=other, workers=1)
    assert sorted(p.name for p in root.iterdir()) == ["area_2", "assets"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name]


def test_default_dataset_race_keeps_the_first_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("LABCODE_DATA_HOME", str(tmp_path))
    params = synth.SynthParams(size=32, images_per_area=(("4", 1),), seed=2)
    root = tmp_path / f"synth-{synth.SYNTH_VERSION}"
    real = writer._write_into

    def slow_loser(tmp, *args):  # another process publishes its copy while this one renders
        real(tmp, *args)
        winner = tmp_path / "winner"
        real(winner, *args)
        (winner / "assets" / "winner.txt").write_text("first")
        winner.rename(root)

    monkeypatch.setattr(writer, "_write_into", slow_loser)
    assert synth.ensure_default_dataset(progress=False, params=params, workers=1) == root
    assert (root / "assets" / "winner.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name]  # the loser's copy is gone


def test_cli_writes_the_requested_areas_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--size", "32", "--images-per-area", "2", "--areas", "2", "6", "--workers", "1",
            "--quiet"]
    assert synth_main(argv) == 0
    assert "wrote 4 images" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["area_2", "area_6", "assets"]
    with pytest.raises(LabError, match=r"--out .*not empty"):
        synth_main(argv)
    assert synth_main(argv[:-4] + ["--areas", "1", "--workers", "1", "--quiet", "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["area_1", "assets"]
    with pytest.raises(LabError, match="unknown area"):
        synth_main(["--out", str(tmp_path / "bad"), "--areas", "9"])


def test_relabelled_codes_are_the_instances_the_annotation_noise_changed(medium, monkeypatch):
    found = synth.relabelled_codes(medium)
    entries = entries_of(medium)
    # Independently: plan the same data set without annotation noise; the entries that differ are the relabelled ones.
    manifest = json.loads((medium / "assets" / "synth.json").read_text())
    def draw_without_relabelling(room, rng):  # the same random draws, so that the rest of the plan is unchanged
        for cls, _ in room.instances:
            if cls in layout._CONFUSED:
                rng.random()

    monkeypatch.setattr(layout, "_add_annotation_noise", draw_without_relabelling)
    clean, _ = writer._plan_dataset(medium, tuple(manifest["areas"]), manifest["images_per_area"], manifest["size"],
                                    manifest["seed"])
    assert len(clean) == len(entries)
    changed = [i for i, (noisy, right) in enumerate(zip(entries, clean)) if noisy.split("_")[0] != right.split("_")[0]]
    assert changed, "the medium data set should hold relabelled instances"
    assert found.tolist() == changed
    for code in changed:  # a look-alike's class, as the generator confuses them
        assert layout._CONFUSED[clean[code].split("_")[0]] == entries[code].split("_")[0]


def test_relabelled_codes_of_a_data_set_the_generator_did_not_make(small, tmp_path):
    copy = tmp_path / "copy"
    (copy / "assets").mkdir(parents=True)
    (copy / "assets" / "semantic_labels.json").write_text((small / "assets" / "semantic_labels.json").read_text())
    assert synth.relabelled_codes(copy) is None  # no synth.json: the real data set, say
    manifest = json.loads((small / "assets" / "synth.json").read_text())
    (copy / "assets" / "synth.json").write_text(json.dumps({**manifest, "seed": manifest["seed"] + 1}))
    assert synth.relabelled_codes(copy) is None  # the plan does not give this label list


def test_default_data_set_has_several_rooms_in_every_area():
    """The validation split holds out whole rooms: every area of the default data set must have several."""
    for area, count in synth.DEFAULT_SYNTH.images_per_area:
        rooms = synth.plan_area(synth.DEFAULT_SYNTH.seed, area, count)
        assert sum(len(room.shots) for room in rooms) == count
        assert len(rooms) >= 5, f"area {area}: only {len(rooms)} rooms"


def test_every_name_imported_from_labcode_synth_is_there():
    from tests.test_data import imported_names

    found = imported_names(re.compile(r"from labcode\.synth import (?:\(([^)]*)\)|([A-Za-z0-9_, ]+))"))
    assert "labcode/commands/synth.py" in found and "solutions/segmentation/01_data_exploration.ipynb" in found
    missing = {path: sorted(n for n in names if not hasattr(synth, n)) for path, names in found.items()}
    assert not {path: names for path, names in missing.items() if names}
