"""The students' self-check (labcode.check) on the complete library: selecting a notebook, colour pipelines, and the
expected values it compares with (labcode/check_data/). Its runs on the student release are in test_check_release.py."""

from __future__ import annotations


def test_self_check_selects_a_notebook(capsys):
    from labcode import check

    assert check.main(["--notebook", "04"]) == 3  # the instructor library passes, but is no student copy
    out = capsys.readouterr().out
    assert "[PASS]   04_metrics_losses: Class weights" in out and "1/1 checks pass." in out
    assert "is not a student copy" in out
    assert check.main(["--notebook", "99"]) == 2
    assert "no exercise for notebook '99'" in capsys.readouterr().err


def test_a_valid_pipeline_with_colour_transforms_passes_the_augmentation_check_without_warnings(monkeypatch):
    # The check's images are in colour, so that colour transforms run as on the data set: no warning (an albucore
    # UserWarning about grey images looked like a fault) and the check passes.
    import warnings

    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    from labcode import transforms
    from labcode.check import check_augmentation

    def colourful(img_size: int) -> A.Compose:
        return A.Compose([
            A.RandomResizedCrop(size=(img_size, img_size), scale=(0.5, 1.0), mask_interpolation=0),
            A.HorizontalFlip(p=0.5),
            A.HueSaturationValue(p=1.0),
            A.RGBShift(p=0.5),
            A.ColorJitter(p=0.5),
            A.Normalize(mean=transforms.MEAN, std=transforms.STD, max_pixel_value=255.0),
            ToTensorV2(),
        ])

    monkeypatch.setattr(transforms, "train_transforms", colourful)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_augmentation()


# --------------------------------------------------------------------------------------------------------------------
# Expected values instead of answers (labcode/check_data/)
# --------------------------------------------------------------------------------------------------------------------

def test_the_stored_expected_values_are_what_the_library_computes_now():
    """The data files cannot go stale: computed again from the complete library, they hold the same values."""
    import numpy as np

    from labcode.check import CHECK_DATA, CHECK_DATA_NAMES, check_data

    assert {p.name for p in CHECK_DATA.glob("*")} == {f"{name}.npz" for name in CHECK_DATA_NAMES}
    for name in CHECK_DATA_NAMES:
        path = CHECK_DATA / f"{name}.npz"
        assert path.stat().st_size < 8_000, f"{path} is larger than a few KB"
        fresh = check_data(name)
        with np.load(path) as stored:
            assert set(stored.files) == set(fresh), f"{path}: run labcode.check.write_check_data() again"
            for key, value in fresh.items():
                assert stored[key].shape == value.shape and stored[key].dtype == value.dtype, (path, key)
                assert np.allclose(stored[key], value, rtol=1e-5, atol=1e-6), \
                    f"{path}[{key!r}] is stale: run labcode.check.write_check_data() again"


def test_write_check_data_writes_every_file(tmp_path):
    from labcode.check import CHECK_DATA_NAMES, write_check_data

    written = write_check_data(tmp_path / "data")
    assert [p.name for p in written] == [f"{name}.npz" for name in CHECK_DATA_NAMES]
    assert all(p.is_file() for p in written)


def test_a_missing_data_file_is_reported_by_name(monkeypatch, tmp_path):
    from labcode import check

    monkeypatch.setattr(check, "CHECK_DATA", tmp_path)
    outcome = check.run_check(next(c for c in check.CHECKS if c.run is check.check_class_weights))
    assert outcome.status == "error"
    assert f"{tmp_path / 'class_weights.npz'} is missing" in outcome.message
