"""What an artifact is, read from the artifact itself, never from its file name (ADR 0020).

- A bundle: a folder with the card (`ml/models/bundle.py: CARD_FILE`), which records what the
  network is and how to feed it.
- An ONNX export: a file whose metadata props carry `food_assets.metadata_version` and its
  precision (`food_assets.precision`: `fp32`, or `int8` with its record; an export written before
  int8 has no precision prop and is fp32), or an `onnx_<name>` folder of such files.

A file named `.onnx` that holds a bundle's card, or an int8 export renamed `model.onnx`, is what
its content says. Old artifacts read as before: the card and the version prop are as old as the
formats.
"""

from __future__ import annotations

import os
from pathlib import Path

from food_assets.ml.errors import CheckpointError

BUNDLE, ONNX = "bundle", "onnx"
#: Only files with this extension are looked at inside an export folder (a listing filter; what
#: each file is comes from its metadata).
ONNX_GLOB = "*.onnx"
NEITHER = (
    "{path} is neither an .onnx file nor a model bundle folder (with card.json); point at the "
    "output of a model_<name> or onnx_<name> asset"
)


def read_props(path: Path) -> dict[str, str]:
    """An ONNX file's metadata props (the file is parsed, not validated: `load_onnx` does that
    when the chosen file is loaded)."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable ONNX file ({exc})") from exc
    return {p.key: p.value for p in proto.metadata_props}


def onnx_precision(path: Path) -> str:
    """`fp32` or `int8`, as the export records it (no record: an export from before int8)."""
    from food_assets.ml.export.metadata import K_PRECISION

    return read_props(path).get(K_PRECISION, "fp32")


def export_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(fp32 files, int8 files) in an export folder, each by its recorded precision."""
    files = sorted(p for p in folder.glob(ONNX_GLOB) if not p.name.startswith(".") and p.is_file())
    precisions = {p: onnx_precision(p) for p in files}
    return (
        [p for p in files if precisions[p] != "int8"],
        [p for p in files if precisions[p] == "int8"],
    )


def artifact_kind(path: str | os.PathLike[str]) -> str:
    """`bundle` or `onnx`, by what the artifact holds.

    Raises:
        CheckpointError: neither (a file that is no readable ONNX model, a folder with neither
            a card nor one export).
    """
    from food_assets.ml.models.bundle import CARD_FILE

    path = Path(path)
    if path.is_dir():
        if (path / CARD_FILE).is_file():
            return BUNDLE
        try:
            fp32, int8 = export_files(path)
        except CheckpointError:
            raise CheckpointError(NEITHER.format(path=path)) from None
        if len(fp32) == 1 or (not fp32 and len(int8) == 1):
            return ONNX
        raise CheckpointError(NEITHER.format(path=path))
    if path.is_file():
        try:
            read_props(path)
        except CheckpointError as exc:  # by its content, whatever its name
            why = str(exc.__cause__ or exc)
            raise CheckpointError(
                f"{path} is neither a readable ONNX file ({why}) nor a model bundle folder "
                "(with card.json); point at the output of a model_<name> or onnx_<name> asset"
            ) from None
        return ONNX
    raise CheckpointError(NEITHER.format(path=path))
