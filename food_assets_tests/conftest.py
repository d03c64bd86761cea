"""Shared fixtures. No test reaches the network: hub calls fail at once."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

# Set before anything imports huggingface_hub / timm / open_clip.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see food_assets/__init__.py
os.environ.setdefault("FOOD_ASSETS_OPENVINO_CACHE", "")  # no OpenVINO disk cache under ~


#: Registry entries whose code path another entry already covers in the per-model unit tests,
#: left out there because they are too big for the 2-core suite: ViT-L/14 is clip_zero_shot's
#: fit, export and Grad-CAM with a 304 M-parameter image tower (minutes and GBs per ONNX export).
TOO_BIG_FOR_UNIT_TESTS = {"clip_vit_l14_zero_shot": "clip_zero_shot"}


def registry_param(name: str, *, slow: bool):
    """A pytest param for one registry entry: marked slow, or skipped if too big (above)."""
    marks = [pytest.mark.slow] if slow else []
    if name in TOO_BIG_FOR_UNIT_TESTS:
        twin = TOO_BIG_FOR_UNIT_TESTS[name]
        marks.append(pytest.mark.skip(reason=f"same code path as {twin}, too big for CPU tests"))
    return pytest.param(name, id=name, marks=marks)


#: docs/ci_skips.md: the skips the CI machine truly cannot avoid (regexes between backticks).
CI_SKIPS_DOC = Path(__file__).resolve().parent.parent / "docs" / "ci_skips.md"


def allowed_ci_skips(doc: Path = CI_SKIPS_DOC) -> list[re.Pattern[str]]:
    """The skip-reason patterns listed in docs/ci_skips.md (`- `pattern`: why` items)."""
    return [re.compile(m) for m in re.findall(r"^- `([^`]+)`:", doc.read_text(), re.M)]


def skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under CI=true a skip whose reason docs/ci_skips.md does not list fails: a shipped
    registry entry that lost a property, or a missing dev extra, must not pass quietly."""
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail") or os.environ.get("CI") != "true":
        return
    reason = skip_reason(report)
    if not any(p.search(reason) for p in allowed_ci_skips()):
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI=true, and docs/ci_skips.md does not list this reason: {reason}"
        )


#: Session fixtures too costly to build twice: under pytest-xdist every test file that uses one
#: runs in the same worker (the whole graph takes about two minutes on 2 cores).
SHARED_SESSION_FIXTURES = ("graph_run",)


def file_groups(tests: Path = Path(__file__).resolve().parent) -> dict[str, str]:
    """Test file (as a node id names it) -> the shared fixture it uses, if any (the first one
    named in its text: a file that uses two would join the first one's group)."""
    groups = {}
    for path in sorted(tests.glob("test_*.py")):
        text = path.read_text()
        used = [f for f in SHARED_SESSION_FIXTURES if re.search(rf"\b{f}\b", text)]
        if used:
            groups[f"{tests.name}/{path.name}"] = used[0]
    return groups


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """`make test` runs `-n auto --dist loadfile`: each file in one worker (its module fixtures
    built once), and the files of one shared session fixture together, in one worker.

    (xdist's own `--dist loadgroup` cannot do this under pytest 9, whose node ids no longer
    follow the `_nodeid` xdist rewrites.) Bigger groups are handed out first (xdist's default
    `--loadscope-reorder`), so the long graph group does not start last.
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    groups = file_groups()

    class SharedFixtureScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return groups.get(path, path)

    return SharedFixtureScheduling(config, log)


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A private data folder for a test: artifacts, generated sources, MLflow store."""
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("FOOD_ASSETS_DATA_DIR", str(path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return path


@pytest.fixture
def resources(data_dir):
    """The code location's resources, pointed at the test's data folder."""
    from food_assets.definitions import default_resources

    return default_resources()


@pytest.fixture(scope="session")
def small_sample_config():
    """Run config for the data assets: a small sample set that still trains in seconds."""
    return {
        "food_images_raw": {
            "config": {
                "sample_num_classes": 4,
                "sample_images_per_class": 16,
                "sample_image_size": 64,
            }
        }
    }


#: Tiny but real settings for the whole graph: 4 sample classes, 24 images each, 48 px models.
TINY_TRAIN = {"epochs": 2, "image_size": 48, "batch_size": 16, "lr": 3e-3}


def tiny_run_config(**model_overrides) -> dict:
    from food_assets.ml.models import get_model_spec, list_models

    ops: dict = {
        "food_images_raw": {
            "config": {
                "sample_num_classes": 4,
                "sample_images_per_class": 24,
                "sample_image_size": 64,
            }
        }
    }
    for name in list_models():
        if get_model_spec(name).family in ("scratch", "transfer"):
            ops[f"model_{name}"] = {"config": {**TINY_TRAIN, **model_overrides.get(name, {})}}
    for name in list_models():
        ops[f"evaluation_{name}"] = {"config": {"n_bootstrap": 200}}
    return {"ops": ops}


@pytest.fixture(scope="session")
def graph_run(tmp_path_factory):
    """The whole asset graph materialized once on a tiny sample; many tests read from it."""
    import dagster as dg

    from food_assets.definitions import build_definitions, default_resources

    data_dir = tmp_path_factory.mktemp("graph") / "data"
    from food_assets.defs.resources import QualityGates

    resources = default_resources(str(data_dir))
    # Two epochs at 48 px leave the scratch models near chance: gate nothing here; the checks'
    # pass/fail behaviour has tests of its own.
    resources["quality"] = QualityGates(accuracy={"sample/*": 0.0})
    defs = build_definitions(resources)
    instance = dg.DagsterInstance.ephemeral()
    # The whole graph as `food-assets run` runs it: a partitioned asset (batch_predictions, one
    # partition per drop) runs per partition, never in a run of everything.
    whole = [a for a in defs.assets if getattr(a, "partitions_def", None) is None]
    result = dg.materialize(
        [*whole, *defs.asset_checks],
        resources=resources,
        run_config=tiny_run_config(),
        instance=instance,
        raise_on_error=False,
    )
    return {
        "result": result,
        "data_dir": data_dir,
        "defs": defs,
        "instance": instance,
        "resources": resources,
    }


@pytest.fixture
def mlflow_isolated():
    """dagster-mlflow leaves its parent run active in the process after an in-process run; end
    it (before and after) so that the next run, against another store, does not nest under it
    ("Run with id=... not found")."""
    import mlflow

    def end_all() -> None:
        while mlflow.active_run() is not None:
            mlflow.end_run()

    before = mlflow.get_tracking_uri()
    end_all()
    yield
    end_all()
    mlflow.set_tracking_uri(before)
