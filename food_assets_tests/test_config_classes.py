"""One source of truth for settings: the Dagster run configs (every `model_<name>` asset, the
`LightningCompute` resource) are derived from the `ml` dataclasses, field for field, and every
key a help text names can be set from run config."""

from __future__ import annotations

import dataclasses
import re
import typing

import dagster as dg
import pydantic
import pytest

from food_assets.definitions import defs
from food_assets.defs.assets.models import model_config_class
from food_assets.defs.config_classes import config_class, config_field_type
from food_assets.defs.resources import LightningCompute
from food_assets.ml.models import get_model_spec, list_models
from food_assets.ml.models.clip import (
    WEIGHT_HELP,
    ClipConfig,
    ClipProbeConfig,
    clip_weights_available,
)
from food_assets.ml.models.weights import missing_imagenet_help
from food_assets.ml.training.config import ComputeConfig, TrainConfig

DERIVED = [
    *[(f"model_{n}", lambda n=n: model_config_class(get_model_spec(n))) for n in list_models()],
    ("LightningCompute", lambda: LightningCompute),
]


def _source(derived: type):
    return derived.__ml_class__


def _dataclass_default(f: dataclasses.Field, overrides: dict) -> typing.Any:
    if f.name in overrides:
        value = overrides[f.name]
    elif f.default is not dataclasses.MISSING:
        value = f.default
    else:
        value = f.default_factory()  # type: ignore[misc]
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize(("label", "make"), DERIVED, ids=[d[0] for d in DERIVED])
def test_run_config_is_the_dataclass_field_for_field(label, make) -> None:
    """Names, types, defaults and descriptions of the Dagster config equal the dataclass's
    (with the registry entry's own defaults). Breakages tried, each fails: a field dropped
    from the derivation (as ClipAssetConfig dropped cache_dir); a description taken from
    somewhere else; `config_defaults` ignored (ViT-L/14's arch back to ViT-B-32); a tuple
    default passed through as a tuple."""
    derived = make()
    source = _source(derived)
    spec_defaults = (
        dict(get_model_spec(label.removeprefix("model_")).config_defaults)
        if label.startswith("model_")
        else {}
    )
    hints = typing.get_type_hints(source)
    fields = {f.name: f for f in dataclasses.fields(source)}
    assert list(derived.model_fields) == list(fields)  # same names, same order
    instance = derived()
    for name, f in fields.items():
        info = derived.model_fields[name]
        assert info.description == f.metadata["description"], name
        expected_type = f.metadata.get("config_type") or config_field_type(hints[name])
        assert info.annotation == expected_type, name
        assert getattr(instance, name) == _dataclass_default(f, spec_defaults), name
    assert instance.to_ml() == source(**spec_defaults)


def test_lightning_models_keep_the_asset_defaults() -> None:
    """ADR 0008: where TrainAssetConfig and TrainConfig had drifted, the asset's (sample-run)
    defaults won, so an asset run without config trains as before. Breakage tried: TrainConfig
    back to epochs 10 / lr 1e-3 / image_size None / num_workers 2 (the ml defaults then)."""
    config = model_config_class(get_model_spec("custom_cnn"))()
    assert (config.epochs, config.lr, config.image_size, config.num_workers) == (4, 2e-3, 96, 0)
    assert config.on_missing_weights == "scratch" and config.batch_size == 32
    assert TrainConfig().epochs == 4 and TrainConfig().image_size == 96


def test_help_texts_name_keys_that_run_config_can_set() -> None:
    """Every config key a help or error text points users at is a field of that model's run
    config (the old CLIP config named `cache_dir` and `class_embeddings` without offering
    them). Breakage tried: `cache_dir` removed from ClipConfig's derivation."""

    def keys(text: str) -> set[str]:
        return {m.split(":")[0] for m in re.findall(r"`([a-z_]+(?::[^`]*)?)`", text)}

    clip = set(model_config_class(get_model_spec("clip_zero_shot")).model_fields)
    offline_reason = clip_weights_available(ClipConfig(cache_dir="/nonexistent-hf-cache"))[1]
    for text in (WEIGHT_HELP, offline_reason):
        assert keys(text) and keys(text) <= clip, keys(text) - clip
    train = set(model_config_class(get_model_spec("resnet50")).model_fields)
    assert keys(missing_imagenet_help("resnet50", "resnet50")) <= train
    probe = set(model_config_class(get_model_spec("clip_linear_probe")).model_fields)
    for cls, fields in ((ClipConfig, clip), (ClipProbeConfig, probe), (TrainConfig, train)):
        for f in dataclasses.fields(cls):
            assert keys(f.metadata["description"]) <= fields, f.name


def test_clip_settings_once_python_only_are_run_config_keys() -> None:
    """`cache_dir`, `class_embeddings`, `quick_gelu`, `model_cfg` (a mapping, no JSON string),
    `template_eval_splits` and `max_iter` validate against the real job."""
    job = defs.resolve_implicit_global_asset_job_def()
    config = {
        "cache_dir": "/models/hf",
        "class_embeddings": "/models/class_embeddings.safetensors",
        "quick_gelu": True,
        "model_cfg": {"embed_dim": 32, "vision_cfg": {"layers": 2}, "text_cfg": {"width": 32}},
        "template_eval_splits": ["val", "test"],
        "allow_download": False,
    }
    for name in ("clip_zero_shot", "clip_vit_l14_zero_shot", "clip_linear_probe"):
        assert dg.validate_run_config(job, {"ops": {f"model_{name}": {"config": config}}})
    probe = {"model_clip_linear_probe": {"config": {**config, "max_iter": 200}}}
    assert dg.validate_run_config(job, {"ops": probe})


#: The linear probe's own settings (`ClipProbeConfig`), none of them a zero-shot setting.
PROBE_ONLY = {"k_shots", "c_grid", "max_iter", "zero_shot_ensemble"}


def test_a_zero_shot_run_config_shows_no_probe_field() -> None:
    """`model_clip_zero_shot`'s (and ViT-L/14's) run config schema lacks the linear probe's
    fields, which `model_clip_linear_probe`'s has, over the same shared CLIP fields; a probe key
    given to a zero-shot model is refused by Dagster's validation.

    Breakage tried: the probe fields put back on `ClipConfig` (the zero-shot schema shows
    them), or the probe entry given `config_cls=ClipConfig` (its schema loses them)."""
    job = defs.resolve_implicit_global_asset_job_def()
    probe = set(model_config_class(get_model_spec("clip_linear_probe")).model_fields)
    assert PROBE_ONLY <= probe
    for name in ("clip_zero_shot", "clip_vit_l14_zero_shot"):
        fields = set(model_config_class(get_model_spec(name)).model_fields)
        assert not fields & PROBE_ONLY, fields & PROBE_ONLY
        assert fields == probe - PROBE_ONLY  # the shared base, nothing else
        schema = job.run_config_schema.config_type.fields["ops"].config_type.fields
        op_fields = schema[f"model_{name}"].config_type.fields["config"].config_type.fields
        assert not set(op_fields) & PROBE_ONLY
        bad = {"ops": {f"model_{name}": {"config": {"k_shots": [1]}}}}
        with pytest.raises(dg.DagsterInvalidConfigError, match="k_shots"):
            dg.validate_run_config(job, bad)


def test_run_config_is_checked_by_the_dataclass() -> None:
    """The dataclass's own validation runs when the run config is built, with its message
    (the CLI checks config up front this way). Breakage tried: the derived class without the
    validator (`lr: 0` is then accepted until the step starts)."""
    cfg = model_config_class(get_model_spec("custom_cnn"))
    with pytest.raises(pydantic.ValidationError, match=r"lr must be > 0 \(got 0.0\)"):
        cfg(lr=0)
    with pytest.raises(pydantic.ValidationError, match="precision 'fp8' is not supported"):
        LightningCompute(precision="fp8")
    # Run config has one number type: 1 (or 1.0) batches is one batch, not "all of them".
    assert cfg(limit_train_batches=1.0).to_ml().limit_train_batches == 1
    assert cfg(limit_train_batches=0.25).to_ml().limit_train_batches == 0.25
    assert LightningCompute(devices="0,1").compute_config().devices == [0, 1]
    assert LightningCompute(devices="4").compute_config().devices == 4


def test_a_field_without_a_description_or_a_run_config_type_is_refused() -> None:
    """The derivation refuses what it cannot carry, at import, instead of dropping it."""

    @dataclasses.dataclass(frozen=True)
    class Undocumented:
        epochs: int = 3

    with pytest.raises(TypeError, match="no description"):
        config_class(Undocumented, name="X")

    @dataclasses.dataclass(frozen=True)
    class Ambiguous:
        devices: int | str = dataclasses.field(default="auto", metadata={"description": "d"})

    with pytest.raises(TypeError, match="config_type"):
        config_class(Ambiguous, name="Y")
    with pytest.raises(TypeError, match="unknown"):
        config_class(ComputeConfig, name="Z", defaults={"gpus": 2})
