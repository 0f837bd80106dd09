"""Per-photo mask lookup (dualpm_addon.masks): which NAME.mask.png goes with which photo."""

import os

import pytest

from dualpm_addon import masks
from dualpm_addon.errors import DualPMError


def _touch(path) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"")
    return str(path)


def test_mask_name_replaces_only_the_last_extension():
    assert masks.mask_name("/a/b/cat.jpg") == "cat.mask.png"
    assert masks.mask_name("dog.v2.JPEG") == "dog.v2.mask.png"
    assert masks.mask_name("noext") == "noext.mask.png"


def test_beside_the_photo(tmp_path):
    photo = _touch(tmp_path / "p" / "cat.jpg")
    assert masks.find(photo) == ("none", None)
    beside = _touch(tmp_path / "p" / "cat.mask.png")
    assert masks.find(photo) == ("beside", beside)
    assert masks.find_mask(photo) == beside


def test_mask_dir_comes_before_beside_and_falls_through_per_photo(tmp_path):
    cat, dog = _touch(tmp_path / "p" / "cat.jpg"), _touch(tmp_path / "p" / "dog.jpg")
    beside_cat = _touch(tmp_path / "p" / "cat.mask.png")
    beside_dog = _touch(tmp_path / "p" / "dog.mask.png")
    in_dir = _touch(tmp_path / "m" / "cat.mask.png")
    mdir = str(tmp_path / "m")
    assert masks.find(cat, mdir) == ("mask-dir", in_dir)
    assert masks.find(dog, mdir) == ("beside", beside_dog)  # none in the dir for dog: beside it
    assert masks.find_mask(cat, mdir) == in_dir and masks.find_mask(cat) == beside_cat


def test_only_the_exact_name_counts(tmp_path):
    photo = _touch(tmp_path / "cat.jpg")
    _touch(tmp_path / "cat.png")  # another photo, not a mask
    _touch(tmp_path / "cat_mask.png")
    _touch(tmp_path / "cat.mask.jpg")
    assert masks.find(photo) == ("none", None)


def test_a_folder_named_like_a_mask_is_not_one(tmp_path):
    photo = _touch(tmp_path / "cat.jpg")
    os.makedirs(tmp_path / "cat.mask.png")
    assert masks.find(photo) == ("none", None)


def test_explicit_file_wins_even_when_missing(tmp_path):
    photo = _touch(tmp_path / "cat.jpg")
    _touch(tmp_path / "cat.mask.png")
    missing = str(tmp_path / "typo.png")
    # the user named it: a missing file is reported for that photo, never silently replaced
    assert masks.find(photo, None, missing) == ("file", missing)


def test_record_says_source_and_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert masks.record("beside", "cat.mask.png") == {"source": "beside",
                                                       "path": os.path.join(str(tmp_path), "cat.mask.png")}
    assert masks.record("alpha", None) == {"source": "alpha", "path": None}
    with pytest.raises(ValueError, match="user"):
        masks.record("user", None)


def test_mask_with_several_photos_is_a_one_line_error():
    with pytest.raises(DualPMError) as e:
        masks.check_arguments(["a.jpg", "b.jpg"], "m.png")
    msg = str(e.value)
    assert "\n" not in msg and "2 photos" in msg and "--mask-dir" in msg and "NAME.mask.png" in msg
    masks.check_arguments(["a.jpg"], "m.png")  # one photo: fine (a missing file fails that photo)


def test_mask_dir_must_be_a_folder_and_not_with_mask(tmp_path):
    with pytest.raises(DualPMError, match="no such folder"):
        masks.check_arguments(["a.jpg"], None, str(tmp_path / "nope"))
    with pytest.raises(DualPMError, match="give one of them"):
        masks.check_arguments(["a.jpg"], "m.png", str(tmp_path))
    masks.check_arguments(["a.jpg", "b.jpg"], None, str(tmp_path))


def test_split_masks_keeps_masks_out_of_a_glob():
    inputs = ["p/cat.png", "p/cat.mask.png", "p/dog.jpg", "./p/dog.mask.png", "q/cat.mask.png", "lone.mask.png"]
    photos, found = masks.split_masks(inputs)
    assert found == ["p/cat.mask.png", "./p/dog.mask.png"]
    # q/cat.mask.png has no q/cat.* among the inputs, lone.mask.png no lone.*: photos after all
    assert photos == ["p/cat.png", "p/dog.jpg", "q/cat.mask.png", "lone.mask.png"]
