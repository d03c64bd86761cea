"""Dagster-native wiring: `dg` finds the code location, `key:model_*` selects exactly the models,
code versions make a changed model stale, freshness, pools, retries, automation and the metadata
the UI renders natively (row counts, column schemas, plots as file references)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from food_assets import layout
from food_assets.definitions import defs
from food_assets.defs.assets import _common
from food_assets.ml.models import get_model_spec, list_models
from food_assets.ml.models.registry import FitSkipped

ROOT = Path(__file__).resolve().parents[1]
DG = Path(sys.executable).parent / "dg"
MODELS = {layout.model_asset(n) for n in list_models()}


def _dg(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [str(DG), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
@pytest.mark.skipif(not DG.exists(), reason="dagster-dg-cli is not installed (the dev extra)")
def test_dg_check_defs_and_list_defs_find_the_code_location(tmp_path) -> None:
    """`[tool.dg]` in pyproject.toml points `dg` at food_assets.definitions: `dg check defs`
    exits 0 and `dg list defs` lists the assets, the `key:model_*` selection exactly the models.

    Breakage tried: `code_location_target_module = "food_assets.nonexistent"` (exit 1, "No
    module named"); `[tool.dg]` removed (dg: not a project, exit 1)."""
    check = _dg("check", "defs", tmp_path=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    listed = _dg("list", "defs", "--json", tmp_path=tmp_path)
    assert listed.returncode == 0, listed.stderr
    keys = {a["asset_key"] for a in json.loads(listed.stdout)["assets"]}
    assert {"food_images_raw", "food_splits", layout.LEADERBOARD_ASSET} | MODELS <= keys
    models = _dg("list", "defs", "--json", "--assets", "key:model_*", tmp_path=tmp_path)
    assert {a["asset_key"] for a in json.loads(models.stdout)["assets"]} == MODELS


class _Selected(Exception):
    """Raised where the CLI would build the run: the selection is resolved by then."""


@pytest.fixture
def captured_cli_selection(monkeypatch, tmp_path):
    """Stops `dagster asset materialize` / `dg launch` right after they resolved `--select` /
    `--assets` on the real code location, and hands back the keys they resolved."""
    from dagster._core.definitions.repository_definition import RepositoryDefinition

    seen: list[set[str]] = []

    def capture(self, asset_keys):
        seen.append({k.to_user_string() for k in asset_keys})
        raise _Selected

    monkeypatch.setattr(RepositoryDefinition, "get_implicit_job_def_for_assets", capture)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.chdir(ROOT)
    return seen


def test_key_model_wildcard_selects_exactly_the_registry_models(captured_cli_selection) -> None:
    """`key:model_*` is every `model_<n>` for n in `list_models()` and nothing else, resolved
    three ways: `AssetSelection.from_string` on the real Definitions, the parsing of `dagster
    asset materialize --select`, and `dg launch --assets` (through `[tool.dg]`). `group:models`
    stays the same set; a bare `model_*` is not a wildcard (the README's pitfall).

    Breakage tried: `LEADERBOARD_ASSET = "model_leaderboard"` in layout.py (the wildcard then
    picks the leaderboard too: all three fail)."""
    from click.testing import CliRunner
    from dagster._cli.asset import asset_materialize_command_impl

    graph = defs.resolve_asset_graph()

    def pick(selection: str) -> set[str]:
        return {k.to_user_string() for k in dg.AssetSelection.from_string(selection).resolve(graph)}

    assert pick("key:model_*") == MODELS
    assert pick("group:models") == MODELS
    with pytest.raises(dg.DagsterInvalidSubsetError):
        pick("model_*")  # a key named `model_` and its downstream: an error, not a wildcard

    with pytest.raises(_Selected):  # `dagster asset materialize -m ... --select 'key:model_*'`
        asset_materialize_command_impl(
            select="key:model_*",
            partition=None,
            partition_range=None,
            config=(),
            config_json=None,
            module_name="food_assets.definitions",
        )
    assert captured_cli_selection[-1] == MODELS

    pytest.importorskip("dagster_dg_cli")
    from dagster_dg_cli.cli import cli as dg_cli

    result = CliRunner().invoke(dg_cli, ["launch", "--assets", "key:model_*"])
    assert isinstance(result.exception, _Selected), result.output
    assert captured_cli_selection[-1] == MODELS


def test_automation_pools_freshness_and_retries_are_declared() -> None:
    """Every GPU step (training, evaluation, Grad-CAM, ONNX parity) is in the `gpu` pool;
    evaluations and the leaderboard carry a freshness policy; training retries; the leaderboard
    has an automation condition, evaluated by a sensor that starts stopped; every asset has a
    code version. Breakage tried: `pool="gpu"` dropped from `gradcam_<name>`; the freshness
    policy dropped from the leaderboard; `retry_policy` dropped from `model_<name>`."""
    graph = defs.resolve_asset_graph()
    for name in list_models():
        for key in (
            layout.model_asset(name),
            layout.evaluation_asset(name),
            layout.gradcam_asset(name),
            layout.onnx_asset(name),
        ):
            node = graph.get(dg.AssetKey(key))
            assert node.pools == {"gpu"}, key
        model = defs.resolve_assets_def(layout.model_asset(name))
        assert model.op.retry_policy is not None and model.op.retry_policy.max_retries >= 1
    for key in [layout.evaluation_asset(n) for n in list_models()] + [layout.LEADERBOARD_ASSET]:
        policy = graph.get(dg.AssetKey(key)).freshness_policy
        assert isinstance(policy, dg.FreshnessPolicy), key
    leaderboard = graph.get(dg.AssetKey(layout.LEADERBOARD_ASSET))
    assert leaderboard.automation_condition is not None
    assert "eager" in str(leaderboard.automation_condition.get_label())
    assert not graph.get(dg.AssetKey(layout.model_asset("custom_cnn"))).automation_condition
    sensor = defs.resolve_sensor_def("leaderboard_automation")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert defs.resolve_schedule_def("nightly_reevaluation")  # the schedule stays
    assert all(graph.get(k).code_version for k in graph.get_all_asset_keys())


# --- code versions -------------------------------------------------------------------------------


def _skip_fit(spec, splits, config, out_dir, context):
    raise FitSkipped("a test fit that declines")


def _skip_fit_v2(spec, splits, config, out_dir, context):
    raise FitSkipped("a changed fit hook")


PROBE = "stale_probe"


def _probe_spec(**changes):
    base = dataclasses.replace(get_model_spec("custom_cnn"), name=PROBE, fit=_skip_fit)
    return dataclasses.replace(base, **changes)


def test_spec_code_version_follows_data_fields_hooks_and_source(tmp_path, monkeypatch) -> None:
    """The code version of `model_<name>` changes with the entry's data fields, its fit hook's
    qualified name and the source text of the modules its hooks live in (and what they
    import), and only then. Breakage tried: `spec_code_version` hashing the data fields only
    (the hook and source cases fail), and without the hooks' modules' source (the source case
    fails)."""
    spec = _probe_spec()
    v = _common.spec_code_version
    assert v(spec) == v(_probe_spec())  # stable
    assert v(spec) != v(_probe_spec(config_defaults={"epochs": 3}))
    assert v(spec) != v(_probe_spec(cam_layer="stem"))
    assert v(spec) != v(_probe_spec(fit=_skip_fit_v2))
    # Source text: a copy of the package with custom_cnn.py (imported by the builder's module,
    # zoo.py) changed by one comment.
    copy = tmp_path / "food_assets"
    shutil.copytree(_common._PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(_common, "_PACKAGE_DIR", copy)
    before = v(get_model_spec("custom_cnn"))
    target = copy / "ml" / "models" / "custom_cnn.py"
    target.write_text(target.read_text() + "\n# changed\n")
    assert v(get_model_spec("custom_cnn")) != before


@pytest.mark.slow
def test_a_changed_spec_shows_the_model_as_stale(resources, small_sample_config, mlflow_isolated):
    """Materialize `model_stale_probe` (a fit that declines: fast), then ask the instance: with
    the same spec it is fresh; with another fit hook (a new code version) it is stale, because
    of its code version. Breakage tried: `code_version=` dropped from the model asset
    decorator (never stale: fails); `spec_code_version` ignoring the hooks (fails)."""
    from dagster._core.definitions.data_version import (
        CachingStaleStatusResolver,
        StaleCauseCategory,
        StaleStatus,
    )
    from dagster._core.loader import LoadingContextForTest

    from food_assets.defs.assets.data import food_images_raw, food_splits
    from food_assets.defs.assets.models import build_model_asset

    instance = dg.DagsterInstance.ephemeral()
    before = [food_images_raw, food_splits, build_model_asset(_probe_spec())]
    result = dg.materialize(
        before,
        resources=resources,
        run_config={"ops": small_sample_config},
        instance=instance,
    )
    assert result.success
    key = dg.AssetKey(layout.model_asset(PROBE))

    def status(assets):
        # What the UI asks: the asset graph of the (changed) code against the instance.
        graph = dg.Definitions(assets=assets, resources=resources).resolve_asset_graph()
        resolver = CachingStaleStatusResolver(instance, graph, LoadingContextForTest(instance))
        return resolver.get_status(key), resolver.get_stale_causes(key)

    assert status(before)[0] == StaleStatus.FRESH
    after = [food_images_raw, food_splits, build_model_asset(_probe_spec(fit=_skip_fit_v2))]
    stale, causes = status(after)
    assert stale == StaleStatus.STALE
    assert any(c.category == StaleCauseCategory.CODE for c in causes), causes


# --- metadata the UI renders natively -------------------------------------------------------


def test_table_metadata_and_file_references() -> None:
    """`table_metadata` gives `dagster/row_count` and a `dagster/column_schema` with typed
    columns; `file_ref` points at a file (a path locally, a URL for a remote root) and never
    embeds its bytes. Breakage tried: `file_ref` returning a base64 Markdown image (the size
    assertion fails); an int column typed "string"."""
    import pandas as pd

    frame = pd.DataFrame({"path": ["a.jpg", "b.jpg"], "label_idx": [0, 1], "p": [0.5, 0.25]})
    meta = _common.table_metadata(frame)
    assert meta["dagster/row_count"].value == 2
    columns = {c.name: c.type for c in meta["dagster/column_schema"].schema.columns}
    assert columns == {"path": "string", "label_idx": "int", "p": "float"}

    class Remote:
        def location(self, path):
            return f"s3://bucket/artifacts/{Path(path).name}"

    local = _common.file_ref("/data/artifacts/evaluation_x/confusion.png")
    assert isinstance(local, dg.PathMetadataValue) and local.path.endswith("confusion.png")
    remote = _common.file_ref("/tmp/confusion.png", Remote())
    assert isinstance(remote, dg.UrlMetadataValue)
    assert remote.url == "s3://bucket/artifacts/confusion.png"
    assert len(str(local.value)) < 200


# --- a retried training resumes -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_retried_training_resumes_from_last_ckpt(
    resources, data_dir, mlflow_isolated, monkeypatch
) -> None:
    """A real `model_custom_cnn` materialization (48 px, 2 epochs) whose first attempt dies as
    its second epoch starts (a Lightning callback raising, the way a lost node or an OOM ends a
    fit): the asset's `RetryPolicy` retries the step in the same run, and attempt 2 resumes from
    the `last.ckpt` attempt 1 wrote: epoch 0 is not run again.

    The policy is the asset's own (`TRAINING_RETRY`: its retries and backoff) with the delay set
    to 0, so that the test does not sit out the 30 s wait. Breakage tried: the asset built with
    no retry policy, as if `retry_policy=` were dropped (the run fails on the injected error);
    `plan_resume` answering "start fresh" (attempt 2 reruns epoch 0: `resumed` is false)."""
    import lightning.pytorch as pl
    import mlflow
    import pandas as pd

    import food_assets.ml.training.fit as training_fit
    from food_assets.defs.assets import models as model_assets
    from food_assets.defs.assets.data import food_images_raw, food_splits
    from food_assets.ml.training.checkpoints import history_rows, load_checkpoint_file
    from food_assets_tests.conftest import tiny_run_config

    asset = layout.model_asset("custom_cnn")
    run_dir = data_dir / "artifacts" / asset
    last = run_dir / "checkpoints" / "last.ckpt"
    seen: dict[str, list] = {}

    class LostOnceInEpochOne(pl.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1 and "rows" not in seen:
                seen["rows"] = history_rows(load_checkpoint_file(last))
                raise RuntimeError("injected: the node training epoch 1 was lost")

    real_train_model = training_fit.train_model

    def train_model(*args, callbacks=(), **kwargs):
        return real_train_model(*args, callbacks=[*callbacks, LostOnceInEpochOne()], **kwargs)

    monkeypatch.setattr(training_fit, "train_model", train_model)  # fit_lightning's call
    policy = _common.TRAINING_RETRY
    no_wait = dg.RetryPolicy(max_retries=policy.max_retries, delay=0, backoff=policy.backoff)
    monkeypatch.setattr(model_assets, "TRAINING_RETRY", no_wait)
    ops = tiny_run_config(custom_cnn={"epochs": 2, "warmup_epochs": 0.5})["ops"]
    result = dg.materialize(
        [food_images_raw, food_splits, model_assets.build_model_asset("custom_cnn")],
        resources=resources,
        run_config={"ops": {k: v for k, v in ops.items() if k in ("food_images_raw", asset)}},
        instance=dg.DagsterInstance.ephemeral(),
    )
    assert result.success
    # Dagster's record of it: one retry of the training step, in this one run.
    steps = [e for e in result.all_events if e.step_key == asset]
    kinds = [e.event_type for e in steps]
    assert kinds.count(dg.DagsterEventType.STEP_UP_FOR_RETRY) == 1
    assert kinds.count(dg.DagsterEventType.STEP_RESTARTED) == 1
    assert kinds[-1] == dg.DagsterEventType.STEP_SUCCESS
    retry = next(e for e in steps if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY)
    assert "injected" in str(retry.event_specific_data.error)
    # Attempt 1 died with epoch 0 in last.ckpt; attempt 2 picked up at epoch 1.
    assert [r["epoch"] for r in seen["rows"]] == [0]
    meta = result.asset_materializations_for_node(asset)[0].metadata
    assert meta["resumed"].value is True
    assert meta["resumed_from_epoch"].value == 1
    assert meta["epochs_this_call"].value == 1 and meta["epochs_run"].value == 2
    history = pd.read_parquet(run_dir / "history.parquet")
    assert list(history["epoch"]) == [0, 1]
    assert history.iloc[0]["train/loss"] == pytest.approx(seen["rows"][0]["train/loss"])
    # MLflow: attempt 1's run ended failed, attempt 2's finished and registered the version.
    client = mlflow.MlflowClient(f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("food_assets").experiment_id],
        filter_string=f"tags.asset = '{asset}' and tags.dagster_run_id = '{result.run_id}'",
    )
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"]
    versions = client.search_model_versions("name = 'food_assets.custom_cnn'")
    finished = next(r for r in runs if r.info.status == "FINISHED")
    assert [v.run_id for v in versions] == [finished.info.run_id]
