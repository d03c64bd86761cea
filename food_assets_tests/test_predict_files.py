"""`predict` walks the folders it is given without looping or hanging on odd entries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from food_assets.ml.inference import iter_image_files


@pytest.mark.timeout(30, method="thread")
def test_symlinked_folders_are_not_entered_and_odd_entries_are_passed_over(
    tmp_path: Path,
) -> None:
    """Breakage caught: following symlinked folders (two `.. ` links made the walk branch 2^40
    ways: predict hung), listing fifos or dangling links as images, or dropping a symlinked
    image file."""
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(photos / "a.jpg")
    Image.new("RGB", (8, 8), "blue").save(photos / "sub" / "b.png")
    Image.new("RGB", (8, 8), "green").save(tmp_path / "elsewhere.jpg")
    (photos / "up").symlink_to("..")
    (photos / "sub" / "up").symlink_to("..")
    (photos / "linked.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    (photos / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (photos / "loop.jpg").symlink_to("loop.jpg")
    os.mkfifo(photos / "pipe.jpg")
    found = [p.relative_to(photos).as_posix() for p in iter_image_files(photos)]
    assert found == ["a.jpg", "linked.jpg", "sub/b.png"]
