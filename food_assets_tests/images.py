"""Makers of real image files, good and bad, for tests (no fixtures, plain functions)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def solid(path: Path, colour=(200, 40, 40), size=(48, 40), fmt="JPEG", mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt)
    return path


def noisy_jpeg(path: Path, size=(512, 384), seed=0, quality=90) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="JPEG", quality=quality)
    return path


def write_bad_files(folder: Path) -> dict[str, str]:
    """Populate `folder/<class>/...` with every kind of awkward file; returns the expected
    quarantine reason per file name (good-but-odd files map to "ok")."""
    good = folder / "good"
    odd = folder / "odd"
    expected: dict[str, str] = {}
    for i in range(6):
        solid(good / f"g{i}.jpg", colour=(10 * i, 120, 200))
        expected[f"g{i}.jpg"] = "ok"
    # Zero-byte, truncated JPEG and PNG, corrupt bytes, a text file pretending to be an image.
    (odd / "empty.jpg").parent.mkdir(parents=True, exist_ok=True)
    (odd / "empty.jpg").write_bytes(b"")
    expected["empty.jpg"] = "empty file"
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        buf, format="JPEG"
    )
    (odd / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    expected["truncated.jpg"] = "truncated or corrupt"
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(png, format="PNG")
    (odd / "truncated.png").write_bytes(png.getvalue()[:-30])
    expected["truncated.png"] = "truncated or corrupt"
    # A real JPEG whose Huffman tables are zeroed: the header parses, the decode fails.
    data = bytearray(buf.getvalue())
    dht = data.find(b"\xff\xc4")
    data[dht + 5 : dht + 25] = b"\x00" * 20
    (odd / "corrupt.jpg").write_bytes(bytes(data))
    expected["corrupt.jpg"] = "truncated or corrupt"
    (odd / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    expected["garbage.jpg"] = "not an image"
    (odd / "notes.txt").write_text("not an image\n")
    expected["notes.txt"] = "not an image"
    # Odd modes that must decode to RGB.
    solid(odd / "cmyk.jpg", mode="CMYK")
    expected["cmyk.jpg"] = "ok"
    Image.new("P", (32, 32), 3).save(odd / "palette.png")
    expected["palette.png"] = "ok"
    Image.new("RGBA", (32, 32), (255, 0, 0, 0)).save(odd / "rgba.png")
    expected["rgba.png"] = "ok"
    Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16)).save(odd / "sixteen.png")
    expected["sixteen.png"] = "ok"
    solid(odd / "grey.jpg", mode="L")
    expected["grey.jpg"] = "ok"
    # EXIF orientation 6 (rotate 90): stored 60x30, shown 30x60.
    img = Image.new("RGB", (60, 30), (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(odd / "rotated.jpg", format="JPEG", exif=exif)
    expected["rotated.jpg"] = "ok"
    # A decompression bomb: tiny file, huge canvas.
    Image.new("1", (5000, 5000)).save(odd / "bomb.png", optimize=True)
    expected["bomb.png"] = "decompression bomb"
    # Hidden files and folders are skipped, odd names are fine.
    solid(odd / ".hidden.jpg")
    solid(folder / "good" / ".cache" / "x.jpg")
    solid(odd / "crème brûlée -1 (copy).jpg")
    expected["crème brûlée -1 (copy).jpg"] = "ok"
    return expected
