"""A corpus of bad inputs (images, data sources, configs, checkpoints, exports, CLI arguments),
each with the message the user sees. None may end in a traceback: an ML function raises a
`FoodAssetsError` subclass, a Dagster step fails with a `Failure` carrying the message, the CLI
prints `error: ...` (or Click's usage error) and exits 2. None may touch a previous result.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from food_assets.ml.errors import FoodAssetsError
from food_assets_tests.conftest import tiny_run_config

# MLflow state is process-wide: each test starts and ends with no active run (conftest.py).
pytestmark = [pytest.mark.usefixtures("mlflow_isolated")]


@dataclass
class Env:
    """What a case may use: a scratch folder, and the previous good results it must not touch."""

    tmp: Path
    good: Path  # good bundle, ONNX export, parquet, image (read-only for cases)
    dagster: dict[str, Any]


# ------------------------------------------------------------------ how a case is observed


def ml(fn: Callable[[Env], Any]) -> Callable[[Env], str]:
    """An ML-layer call that must raise a FoodAssetsError subclass; returns its message."""

    def run(env: Env) -> str:
        try:
            fn(env)
        except FoodAssetsError as exc:
            return str(exc)
        raise AssertionError("no error raised")

    return run


def dagster_step(selection: list[str], ops: dict[str, Any]) -> Callable[[Env], str]:
    """A materialization that must fail in its step with a `Failure`; returns its description."""

    def run(env: Env) -> str:
        import dagster as dg

        d = env.dagster
        result = dg.materialize(
            d["assets"], selection=selection, resources=d["resources"], run_config={"ops": ops},
            instance=d["instance"], raise_on_error=False,
        )  # fmt: skip
        (failure,) = result.get_step_failure_events()
        data = failure.step_failure_data
        assert data.error.cls_name == "Failure", data.error.to_string()
        assert data.error.cause is None  # `from None`: no chained traceback in the UI
        return data.user_failure_data.description

    return run


def dagster_config(ops: dict[str, Any]) -> Callable[[Env], str]:
    """Run config Dagster rejects before anything runs (DagsterInvalidConfigError)."""

    def run(env: Env) -> str:
        import dagster as dg

        d = env.dagster
        with pytest.raises(dg.DagsterInvalidConfigError) as info:
            dg.materialize(d["assets"], selection=list(ops), resources=d["resources"],
                           run_config={"ops": ops}, instance=d["instance"])  # fmt: skip
        return " ".join(e.message for e in info.value.errors)

    return run


def cli(*args: str | Callable[[Env], str]) -> Callable[[Env], str]:
    """`food-assets ARGS` (an arg may be a function of Env); must exit 2 without a traceback."""

    def run(env: Env) -> str:
        from typer.testing import CliRunner

        from food_assets.cli import app

        argv = ["--data-dir", str(env.tmp / "cli_data")]
        argv += [a(env) if callable(a) else a for a in args]
        result = CliRunner().invoke(app, argv)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "Traceback" not in result.output
        assert result.exit_code == 2, result.output
        return re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)  # Click's usage box, unwrapped

    return run


# ------------------------------------------------------------------ bad files


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _jpeg() -> bytes:
    buf = io.BytesIO()
    arr = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="PNG")
    return buf.getvalue()


def open_bad(name: str, data: bytes, **kw: Any) -> Callable[[Env], Any]:
    def fn(env: Env) -> Any:
        from food_assets.ml.data.images import open_image

        return open_image(_write(env.tmp / name, data), **kw)

    return fn


def bundle_with(edit: Callable[[Path], None]) -> Callable[[Env], Any]:
    """A copy of the good bundle, damaged by `edit`, then loaded."""

    def fn(env: Env) -> Any:
        from food_assets.ml.models.bundle import load_bundle

        copy = env.tmp / "bundle"
        shutil.copytree(env.good / "bundle", copy)
        edit(copy)
        return load_bundle(copy)

    return fn


def card_edit(change: Callable[[dict], Any]) -> Callable[[Path], None]:
    def edit(bundle: Path) -> None:
        card = json.loads((bundle / "card.json").read_text())
        change(card)
        (bundle / "card.json").write_text(json.dumps(card))

    return edit


def onnx_with(edit: Callable[[Any], None]) -> Callable[[Env], Any]:
    def fn(env: Env) -> Any:
        import onnx

        from food_assets.ml.inference.predictor import load_predictor

        proto = onnx.load(str(env.good / "model.onnx"))
        edit(proto)
        onnx.save(proto, str(env.tmp / "model.onnx"))
        return load_predictor(env.tmp / "model.onnx")

    return fn


def _set_prop(key: str, value: str) -> Callable[[Any], None]:
    def edit(proto: Any) -> None:
        for p in proto.metadata_props:
            if p.key == key:
                p.value = value

    return edit


def _drop_prop(key: str) -> Callable[[Any], None]:
    def edit(proto: Any) -> None:
        keep = [p for p in proto.metadata_props if p.key != key]
        del proto.metadata_props[:]
        proto.metadata_props.extend(keep)

    return edit


def _double_weights(proto: Any) -> None:
    from onnx import numpy_helper

    w = numpy_helper.to_array(proto.graph.initializer[0])
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(w * 2, "W"))


def train_cfg(**kw: Any) -> Callable[[Env], Any]:
    def fn(env: Env) -> Any:
        from food_assets.ml.training import TrainConfig

        return TrainConfig(**kw)

    return fn


def compute_cfg(**kw: Any) -> Callable[[Env], Any]:
    def fn(env: Env) -> Any:
        from food_assets.ml.training import ComputeConfig

        return ComputeConfig(**kw)

    return fn


def train(model: str = "custom_cnn", **kw: Any) -> Callable[[Env], Any]:
    """train_model on a tiny manifest; fails before writing anything under the run folder."""

    def fn(env: Env) -> Any:
        from food_assets.ml.data.splits import SplitManifest
        from food_assets.ml.training import ComputeConfig, TrainConfig, train_model

        splits = SplitManifest(env.good / "splits.parquet", ("apple_pie", "pizza"), "imagefolder")
        cfg = TrainConfig(**{"epochs": 1, "image_size": 32, "num_workers": 0, **kw})
        out = env.tmp / "run"
        try:
            return train_model(model, splits, cfg, ComputeConfig(accelerator="cpu"), out)
        finally:
            assert not out.exists(), "a refused request wrote into the run folder"

    return fn


def _ckpt(env: Env, obj: Any) -> Path:
    path = env.tmp / "last.ckpt"
    torch.save(obj, path)
    return path


def _load_ckpt(make: Callable[[Env], Path]) -> Callable[[Env], Any]:
    def fn(env: Env) -> Any:
        from food_assets.ml.training.train import load_checkpoint_file

        return load_checkpoint_file(make(env))

    return fn


def _splits(frame: pd.DataFrame, **kw: Any) -> Callable[[Env], Any]:
    def fn(env: Env) -> Any:
        from food_assets.ml.data.splits import make_splits

        return make_splits(frame, **{"val_fraction": 0.15, "test_fraction": 0.15, "seed": 0, **kw})

    return fn


# ------------------------------------------------------------------ the corpus

BAD_TAG_YAML = "ops: !!python/object/apply:os.system ['echo pwned']\n"
XFAIL_CARD = ()  # was a strict xfail until ml/models/bundle.py validated the card

CASES: list[Any] = [
    # images
    ("image: empty file", ml(open_bad("e.jpg", b"")), "e.jpg: empty file"),
    ("image: truncated JPEG", ml(open_bad("t.jpg", _jpeg()[:600])), "t.jpg: truncated or corrupt"),
    ("image: truncated PNG", ml(open_bad("t.png", _png()[:-30])), "t.png: truncated or corrupt"),
    ("image: random bytes", ml(open_bad("g.jpg", bytes(range(256)) * 4)), "g.jpg: not an image"),
    ("image: text named .jpg", ml(open_bad("n.jpg", b"just notes\n")), "n.jpg: not an image"),
    (
        "image: decompression bomb",
        ml(open_bad("b.png", _png(), max_pixels=100)),
        "b.png: decompression bomb (64x64 px is over the 100 px limit)",
    ),
    (
        "image: missing file",
        ml(
            lambda env: __import__("food_assets.ml.data.images", fromlist=["x"]).open_image(
                env.tmp / "gone.jpg"
            )
        ),
        "gone.jpg: unreadable (No such file or directory)",
    ),
    (
        "predict: path that does not exist",
        ml(
            lambda env: list(
                __import__("food_assets.ml.inference.predictor", fromlist=["x"]).iter_image_files(
                    env.tmp / "nope"
                )
            )
        ),
        "nope does not exist: pass an image file or a folder of images",
    ),
    # data sources and splits
    (
        "imagefolder: missing root",
        ml(
            lambda env: __import__("food_assets.ml.data.sources", fromlist=["x"]).list_imagefolder(
                env.tmp / "nope"
            )
        ),
        "does not exist: set `root` to a folder laid out as",
    ),
    (
        "imagefolder: root is a file",
        ml(
            lambda env: __import__("food_assets.ml.data.sources", fromlist=["x"]).list_imagefolder(
                env.good / "img.png"
            )
        ),
        "is a file, not a folder",
    ),
    (
        "imagefolder: empty root",
        ml(
            lambda env: (
                (env.tmp / "empty").mkdir()
                or __import__("food_assets.ml.data.sources", fromlist=["x"]).list_imagefolder(
                    env.tmp / "empty"
                )
            )
        ),
        "is empty",
    ),
    (
        "food101: no local copy",
        ml(
            lambda env: __import__("food_assets.ml.data.sources", fromlist=["x"]).list_food101(
                env.tmp / "f101"
            )
        ),
        "no Food-101 copy at",
    ),
    (
        "splits: fractions leave no train",
        ml(_splits(pd.DataFrame({"path": ["a"]}), val_fraction=0.6, test_fraction=0.5)),
        "val_fraction + test_fraction must leave images for training",
    ),
    (
        "splits: empty manifest",
        ml(_splits(pd.DataFrame(columns=["path", "label", "sha256"]))),
        "the dataset has no usable images: nothing to split",
    ),
    # training and compute configs
    ("train config: epochs 0", ml(train_cfg(epochs=0)), "epochs must be >= 1 (got 0)"),
    ("train config: lr 0", ml(train_cfg(lr=0.0)), "lr must be > 0 (got 0.0)"),
    (
        "train config: unknown mode",
        ml(train_cfg(mode="distill")),
        "mode 'distill' is not one of scratch, feature_extract, finetune",
    ),
    ("train config: batch size 0", ml(train_cfg(batch_size=0)), "batch_size must be >= 1 (got 0)"),
    (
        "train config: image size 8",
        ml(train_cfg(image_size=8)),
        "image_size must be >= 16 or null for the model default (got 8)",
    ),
    (
        "train config: label smoothing 1",
        ml(train_cfg(label_smoothing=1.0)),
        "label_smoothing must be in [0, 1) (got 1.0)",
    ),
    (
        "train config: zero batches",
        ml(train_cfg(limit_train_batches=0)),
        "limit_train_batches must be a batch count >= 1, a fraction in (0, 1], or null (got 0)",
    ),
    (
        "train config: frozen epochs in scratch",
        ml(train_cfg(mode="scratch", frozen_epochs=1, epochs=2)),
        "frozen_epochs only applies to mode finetune",
    ),
    (
        "compute: unknown precision",
        ml(compute_cfg(precision="fp8")),
        "precision 'fp8' is not supported; use one of",
    ),
    ("compute: zero devices", ml(compute_cfg(devices=0)), "devices must not be 0"),
    (
        "compute: zero nodes",
        ml(compute_cfg(num_nodes=0)),
        "num_nodes must be a positive integer (got 0)",
    ),
    ("train: unknown model", ml(train("vgg99")), "unknown model 'vgg99'; known models:"),
    (
        "train: CLIP is not trained",
        ml(train("clip_zero_shot")),
        "'clip_zero_shot' is a zero_shot model: it is not trained with train_model",
    ),
    (
        "train: scratch with imagenet weights",
        ml(train(mode="scratch", weights="imagenet")),
        "mode scratch trains custom_cnn from random init, but weights='imagenet'",
    ),
    (
        "train: finetune without weights",
        ml(train(mode="finetune", weights="none")),
        "mode finetune needs pretrained weights",
    ),
    (
        "train: weights file missing",
        ml(train(mode="finetune", weights="/no/such.pth")),
        "weights file /no/such.pth does not exist",
    ),
    (
        "train: unknown builder keyword",
        ml(train(build_kwargs={"depth": 3})),
        "build_kwargs {'depth': 3} not accepted by 'custom_cnn'",
    ),
    # bundles
    (
        "bundle: no card.json",
        ml(bundle_with(lambda b: (b / "card.json").unlink())),
        "is not a model bundle (no card.json); materialize the model asset first",
    ),
    (
        "bundle: card.json not JSON",
        ml(bundle_with(lambda b: (b / "card.json").write_text("{"))),
        "card.json is not valid JSON",
    ),
    (
        "bundle: card lacks fields",
        ml(bundle_with(card_edit(lambda c: c.pop("preprocess")))),
        "card.json lacks ['preprocess']",
    ),
    (
        "bundle: card unknown field",
        ml(bundle_with(card_edit(lambda c: c.update(exec="x")))),
        "card.json has unknown fields ['exec']",
    ),
    (
        "bundle: no class names",
        ml(bundle_with(card_edit(lambda c: c.update(class_names=[])))),
        "class_names must be a non-empty list of strings",
    ),
    (
        "bundle: duplicate class names",
        ml(bundle_with(card_edit(lambda c: c.update(class_names=["a", "a", "b"])))),
        "card.json: class_names has duplicates",
    ),
    (
        "bundle: negative temperature",
        ml(bundle_with(card_edit(lambda c: c.update(temperature=-1)))),
        "card.json: temperature must be positive",
    ),
    (
        "bundle: unknown model name",
        ml(bundle_with(card_edit(lambda c: c.update(name="vgg99")))),
        "unknown model 'vgg99'",
    ),
    (
        "bundle: class count does not fit weights",
        ml(bundle_with(card_edit(lambda c: c.update(class_names=["a", "b"])))),
        "does not fit model 'custom_cnn' with 2 classes",
    ),
    (
        "bundle: weights are garbage",
        ml(bundle_with(lambda b: (b / "model.safetensors").write_bytes(b"\x00" * 64))),
        "is corrupt or not a safetensors file",
    ),
    (
        "bundle: weights missing",
        ml(bundle_with(lambda b: (b / "model.safetensors").unlink())),
        "has no model.safetensors",
    ),
    pytest.param(
        "bundle: unknown build_kwargs in card",
        ml(bundle_with(card_edit(lambda c: c.update(build_kwargs={"depth": 3})))),
        "build_kwargs",
        marks=XFAIL_CARD,
    ),
    pytest.param(
        "bundle: non-numeric metric",
        ml(bundle_with(card_edit(lambda c: c.update(metrics={"acc": "high"})))),
        "metrics",
        marks=XFAIL_CARD,
    ),
    # checkpoints and weight files
    (
        "checkpoint: not a zip or pickle",
        ml(_load_ckpt(lambda env: _write(env.tmp / "x.ckpt", b"nonsense"))),
        "is corrupt (UnpicklingError); delete it (or its folder) to start this training run over",
    ),
    (
        "checkpoint: not a Lightning checkpoint",
        ml(_load_ckpt(lambda env: _ckpt(env, {"a": 1}))),
        "is not a Lightning checkpoint; delete it to start over",
    ),
    (
        "weights: a file with no tensors",
        ml(
            lambda env: __import__(
                "food_assets.ml.models.weights", fromlist=["x"]
            ).load_state_dict_file(_ckpt(env, {"a": 1}))
        ),
        "holds no tensors: not a weights file",
    ),
    # ONNX exports
    (
        "onnx: not ONNX",
        ml(
            lambda env: __import__(
                "food_assets.ml.inference.predictor", fromlist=["x"]
            ).load_predictor(_write(env.tmp / "m.onnx", b"\x08\x07garbage"))
        ),
        "is neither a readable ONNX file",
    ),
    (
        "onnx: metadata removed",
        ml(onnx_with(_drop_prop("food_assets.class_names"))),
        "metadata lacks ['food_assets.class_names']",
    ),
    (
        "onnx: class names not JSON",
        ml(onnx_with(_set_prop("food_assets.class_names", "[a"))),
        "class_names is not valid JSON",
    ),
    (
        "onnx: temperature zero",
        ml(onnx_with(_set_prop("food_assets.temperature", "0"))),
        "temperature must be a positive number (got 0.0)",
    ),
    (
        "onnx: weights changed after export",
        ml(onnx_with(_double_weights)),
        "the graph or weights changed after export (hash mismatch)",
    ),
    (
        "predict: folder that is no model",
        ml(
            lambda env: __import__(
                "food_assets.ml.inference.predictor", fromlist=["x"]
            ).load_predictor(env.tmp)
        ),
        "is neither an .onnx file nor a model bundle folder (with card.json)",
    ),
    # Dagster runs
    (
        "dagster: imagefolder without root",
        dagster_step(
            ["food_images_raw"], {"food_images_raw": {"config": {"source": "imagefolder"}}}
        ),
        "source imagefolder needs `root`: a root/<class>/<image> tree",
    ),
    (
        "dagster: food101 not available offline",
        dagster_step(
            ["food_images_raw"],
            {"food_images_raw": {"config": {"source": "food101", "root": "/no/f101"}}},
        ),
        "no Food-101 copy at /no/f101",
    ),
    (
        "dagster: splits leave no train",
        dagster_step(
            ["food_splits"],
            {"food_splits": {"config": {"val_fraction": 0.6, "test_fraction": 0.5}}},
        ),
        "val_fraction + test_fraction must leave images for training",
    ),
    (
        "dagster: scratch model with imagenet weights",
        dagster_step(
            ["model_custom_cnn"],
            {
                "model_custom_cnn": {
                    "config": {"mode": "scratch", "weights": "imagenet", "epochs": 1}
                }
            },
        ),
        "mode scratch trains custom_cnn from random init, but weights='imagenet'",
    ),
    (
        "dagster: missing weights file, on_missing_weights error",
        dagster_step(
            ["model_custom_cnn"],
            {
                "model_custom_cnn": {
                    "config": {
                        "mode": "finetune",
                        "weights": "/no/w.pth",
                        "on_missing_weights": "error",
                    }
                }
            },
        ),
        "weights file /no/w.pth does not exist",
    ),
    (
        "dagster: config of the wrong type",
        dagster_config({"model_custom_cnn": {"config": {"epochs": "many"}}}),
        "Invalid scalar at path root:ops:model_custom_cnn:config:epochs",
    ),
    (
        "dagster: unknown config key",
        dagster_config({"model_custom_cnn": {"config": {"epoch": 3}}}),
        'Received unexpected config entry "epoch"',
    ),
    # the CLI
    (
        "cli: predict a missing path",
        cli("predict", "/no/such/photo.jpg"),
        "error: /no/such/photo.jpg does not exist: pass an image file or a folder of images",
    ),
    (
        "cli: predict with an unknown model",
        cli("predict", lambda env: str(env.good / "img.png"), "--model", "vgg99"),
        "error: unknown model 'vgg99'; known models:",
    ),
    (
        "cli: predict --format xml",
        cli("predict", lambda env: str(env.good / "img.png"), "--format", "xml"),
        "Invalid value for '--format' / '-f': Value error, 'xml' is not one of 'table', "
        "'json', 'csv'",
    ),
    (
        "cli: predict --from a missing file",
        cli("predict", lambda env: str(env.good / "img.png"), "--from", "/no/model.onnx"),
        "error: /no/model.onnx does not exist: pass an .onnx file or a model bundle folder",
    ),
    (
        "cli: predict --from a tampered export",
        cli(
            "predict",
            lambda env: str(env.good / "img.png"),
            "--from",
            lambda env: str(_tampered_onnx(env)),
        ),
        "hash mismatch",
    ),
    (
        "cli: predict --model and --from together",
        cli(
            "predict",
            lambda env: str(env.good / "img.png"),
            "--model",
            "custom_cnn",
            "--from",
            lambda env: str(env.good / "bundle"),
        ),
        "error: pass either --model or --from, not both",
    ),
    (
        "cli: predict a folder without images",
        cli("predict", lambda env: (env.tmp / "none").mkdir() or str(env.tmp / "none")),
        "error: no image files under",
    ),
    (
        "cli: train an unknown model",
        cli("train", "vgg99"),
        "error: unknown model 'vgg99'; known models:",
    ),
    (
        "cli: train --epochs 0",
        cli("train", "custom_cnn", "--epochs", "0"),
        "Invalid value for '--epochs': Input should be greater than or equal to 1",
    ),
    (
        "cli: train --config missing",
        cli("train", "custom_cnn", "--config", "/no/run.yaml"),
        "error: config file /no/run.yaml does not exist",
    ),
    (
        "cli: train --config with a python tag",
        cli(
            "train",
            "custom_cnn",
            "--config",
            lambda env: str(_write(env.tmp / "evil.yaml", BAD_TAG_YAML.encode())),
        ),
        "could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
    (
        "cli: export an unknown model",
        cli("export", "vgg99"),
        "error: unknown model 'vgg99'; known models:",
    ),
]


def _tampered_onnx(env: Env) -> Path:
    import onnx

    proto = onnx.load(str(env.good / "model.onnx"))
    _double_weights(proto)
    onnx.save(proto, str(env.tmp / "tampered.onnx"))
    return env.tmp / "tampered.onnx"


def _ids(case: Any) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous good results every case must leave untouched."""
    from food_assets.ml.models.bundle import ModelCard, save_bundle
    from food_assets.ml.models.registry import create_model, get_model_spec
    from food_assets_tests.test_ops_faults import make_onnx

    root = tmp_path_factory.mktemp("good")
    torch.manual_seed(0)
    pre = get_model_spec("custom_cnn").preprocess().with_size(32)
    save_bundle(root / "bundle", create_model("custom_cnn", num_classes=3),
                ModelCard("custom_cnn", ["apple_pie", "pizza", "sushi"], pre))  # fmt: skip
    make_onnx(root / "model.onnx", ["apple_pie", "pizza", "sushi"])
    Image.new("RGB", (40, 40), (200, 60, 30)).save(root / "img.png")
    rows = [{"path": str(root / "img.png"), "label": lab, "label_idx": i, "split": s,
             "sha256": f"{i}{s}", "width": 40, "height": 40, "mode": "RGB"}
            for i, lab in enumerate(["apple_pie", "pizza"]) for s in ("train", "val")]  # fmt: skip
    pd.DataFrame(rows).to_parquet(root / "splits.parquet", index=False)
    return root


@pytest.fixture(scope="module")
def dagster_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Data assets materialized once; Dagster cases re-run parts of the graph over them."""
    import dagster as dg

    from food_assets.definitions import build_definitions, default_resources

    data_dir = tmp_path_factory.mktemp("bad_inputs") / "data"
    resources = default_resources(str(data_dir))
    defs = build_definitions(resources)
    instance = dg.DagsterInstance.ephemeral()
    assets = list(defs.assets)
    ops = {"food_images_raw": tiny_run_config()["ops"]["food_images_raw"]}
    dg.materialize(assets, selection=["food_images_raw", "food_splits"], resources=resources,
                   run_config={"ops": ops}, instance=instance)  # fmt: skip
    return {"assets": assets, "resources": resources, "instance": instance, "data_dir": data_dir}


def _snapshot(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.is_file() and "mlflow" not in p.parts and "dagster_home" not in p.parts:
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize(("name", "run", "message"), CASES, ids=[_ids(c) for c in CASES])
def test_bad_input_gets_a_clear_message_and_keeps_previous_results(
    name: str,
    run: Callable[[Env], str],
    message: str,
    good: Path,
    dagster_env: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    artifacts_dir = dagster_env["data_dir"] / "artifacts"
    before = _snapshot(good, artifacts_dir)
    shown = run(Env(tmp=tmp_path, good=good, dagster=dagster_env))
    assert message in shown, f"{name}: expected {message!r} in {shown!r}"
    assert "Traceback" not in shown
    after = _snapshot(good, artifacts_dir)
    # Previous results are untouched (new files from a failed run's own folders aside).
    assert {k: v for k, v in after.items() if k in before} == before


def test_the_corpus_is_broad() -> None:
    kinds = {_ids(c).split(":")[0] for c in CASES}
    assert len(CASES) >= 30
    assert {"image", "train config", "bundle", "checkpoint", "onnx", "dagster", "cli"} <= kinds
