"""Faults a team will meet: a killed training run, an interrupted or concurrent write, a full or
read-only disk, and files from an untrusted place. Real processes are killed with SIGKILL, the
disk really fills (a small tmpfs when this machine lets us mount one), and tampered files carry
a live pickle payload that would write a marker file if it ever ran.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from food_assets.ml import artifacts
from food_assets.ml.errors import ArtifactWriteError, CheckpointError
from food_assets.ml.models.bundle import ModelCard, load_bundle, save_bundle
from food_assets.ml.models.registry import create_model, get_model_spec
from food_assets_tests.conftest import tiny_run_config

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 180  # the longest any test waits for a child process to reach its kill point

# MLflow state is process-wide: each test starts and ends with no active run (conftest.py).
pytestmark = [pytest.mark.usefixtures("mlflow_isolated")]


# ------------------------------------------------------------------ helpers


def _child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **extra}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@contextlib.contextmanager
def _child(
    code: str, *args: str, prefix: list[str] | None = None, **popen: object
) -> Iterator[subprocess.Popen]:
    """A Python child running `code`; killed (SIGKILL) and reaped on exit whatever happens."""
    proc = subprocess.Popen(
        [*(prefix or []), sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=popen.pop("env", None) or _child_env(),
        **popen,  # type: ignore[arg-type]
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = WAIT_S) -> None:
    """Bounded wait for a child to reach a point it announces by creating `path`."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            pytest.fail(f"child exited ({proc.returncode}) before {path.name}:\n{out[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"child did not reach {path.name} within {timeout} s")
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


def _card(tag: str = "v1") -> ModelCard:
    pre = get_model_spec("custom_cnn").preprocess().with_size(32)
    return ModelCard("custom_cnn", ["apple_pie", "pizza", "sushi"], pre, weights_source=tag)


def _bundle(path: Path, seed: int, tag: str) -> Path:
    torch.manual_seed(seed)
    return save_bundle(path, create_model("custom_cnn", num_classes=3), _card(tag))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def make_onnx(path: Path, class_names: list[str], *, size: int = 32, seed: int = 0) -> Path:
    """A small but genuine food_assets ONNX export (pool -> linear head) with the metadata and
    graph hash `export_onnx` writes; built directly so that no test waits for torch.export."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from food_assets.ml.export.metadata import K_GRAPH_SHA, OnnxMetadata, graph_sha256

    n = len(class_names)
    w = np.random.default_rng(seed).normal(size=(3, n)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("Gemm", ["flat", "W"], ["logits"]),
        ],
        "food_assets_tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n])],
        [numpy_helper.from_array(w, "W")],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    pre = get_model_spec("custom_cnn").preprocess().with_size(size)
    props = OnnxMetadata("custom_cnn", tuple(class_names), pre, 1.0).to_props()
    props[K_GRAPH_SHA] = graph_sha256(proto.graph)
    for k, v in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(proto)
    with artifacts.atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return path


def _image(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 60, 30)).save(path)
    return path


# ------------------------------------------------------------------ 1. killed training


TRAIN_UNTIL_KILLED = r"""
import json, sys, time
from pathlib import Path
import dagster as dg
import lightning.pytorch as pl
import food_assets.ml.training.fit as training_fit
from food_assets.definitions import build_definitions
from food_assets.definitions import default_resources

args = json.loads(sys.argv[1])
real_train_model = training_fit.train_model

class HangMidEpoch(pl.Callback):
    # Stands in for a node lost mid-epoch: announce the point, then stall until SIGKILLed.
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == args["hang_epoch"] and batch_idx == 1:
            Path(args["marker"]).write_text(str(trainer.current_epoch))
            time.sleep(600)

def train_model(*a, callbacks=(), **kw):
    return real_train_model(*a, callbacks=[*callbacks, HangMidEpoch()], **kw)

training_fit.train_model = train_model  # the Lightning fit hook looks it up at call time
resources = default_resources(args["data_dir"])
defs = build_definitions(resources)
dg.materialize(list(defs.assets), selection=args["selection"], resources=resources,
               run_config=args["run_config"], instance=dg.DagsterInstance.ephemeral())
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_training_killed_mid_epoch_resumes_when_rematerialized(tmp_path: Path) -> None:
    """SIGKILL a real Dagster run in the middle of its second (last) epoch; materializing the
    asset again resumes from last.ckpt at that epoch and finishes: only it is lost."""
    import dagster as dg

    from food_assets.definitions import build_definitions, default_resources

    data_dir = tmp_path / "data"
    selection = ["food_images_raw", "food_splits", "model_custom_cnn"]
    ops = tiny_run_config(custom_cnn={"epochs": 2, "warmup_epochs": 0.5})["ops"]
    run_config = {"ops": {k: v for k, v in ops.items() if k in selection}}
    marker = tmp_path / "hanging_in_epoch"
    args = {"data_dir": str(data_dir), "selection": selection, "run_config": run_config,
            "marker": str(marker), "hang_epoch": 1}  # fmt: skip
    with _child(TRAIN_UNTIL_KILLED, json.dumps(args)) as proc:
        _wait_for(marker, proc)
        _kill(proc)

    run_dir = data_dir / "artifacts" / "model_custom_cnn"
    last = run_dir / "checkpoints" / "last.ckpt"
    rows_before = torch.load(last, weights_only=True)["callbacks"]["TrainingHistory"]["rows"]
    assert [r["epoch"] for r in rows_before] == [0]  # epoch 0 saved, epoch 1 was in flight
    assert not (run_dir / "bundle").exists()

    resources = default_resources(str(data_dir))
    defs = build_definitions(resources)
    result = dg.materialize(
        list(defs.assets), selection=selection, resources=resources, run_config=run_config,
        instance=dg.DagsterInstance.ephemeral(),
    )  # fmt: skip
    meta = result.asset_materializations_for_node("model_custom_cnn")[0].metadata
    assert meta["resumed"].value is True
    assert meta["resumed_from_epoch"].value == 1  # picked up at epoch 1, not 0
    assert meta["epochs_this_call"].value == 1 and meta["epochs_run"].value == 2
    history = pd.read_parquet(run_dir / "history.parquet")
    assert list(history["epoch"]) == [0, 1]
    assert history.iloc[0]["train/loss"] == pytest.approx(rows_before[0]["train/loss"])
    model, card = load_bundle(run_dir / "bundle")
    assert card.class_names == list(result.output_for_node("food_splits").class_names)


# ------------------------------------------------------------------ 2. interrupted writes


HANG_WHILE_WRITING = r"""
import os, sys, time
from pathlib import Path
import torch
from food_assets.ml import artifacts
from food_assets.ml.models.bundle import ModelCard, save_bundle
from food_assets.ml.models.registry import create_model, get_model_spec

mode, target, marker = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

def stall():
    marker.write_text(mode)
    time.sleep(600)

if mode == "onnx_half_written":
    # An export killed while onnx.save_model is writing: half the bytes are on disk.
    data = Path(sys.argv[4]).read_bytes()
    with artifacts.atomic_path(target) as tmp:
        tmp.write_bytes(data[: len(data) // 2])
        stall()
else:
    real_write = Path.write_bytes
    real_replace = os.replace
    if mode == "bundle_half_written":
        # save_bundle serialises the weights in memory, then writes model.safetensors.
        def write_bytes(self, data):
            if self.name != "model.safetensors":
                return real_write(self, data)
            real_write(self, bytes(data)[: len(data) // 2])
            stall()
        Path.write_bytes = write_bytes
    else:  # "bundle_between_renames": the old folder moved aside, the new one not yet in place
        def replace(src, dst):
            if Path(dst) == target and Path(src).name.startswith(".bundle.tmp-"):
                stall()
            return real_replace(src, dst)
        os.replace = replace
    torch.manual_seed(1)
    pre = get_model_spec("custom_cnn").preprocess().with_size(32)
    card = ModelCard("custom_cnn", ["apple_pie", "pizza", "sushi"], pre, weights_source="v2")
    save_bundle(target, create_model("custom_cnn", num_classes=3), card)
"""


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_writers_killed_mid_write_leave_the_old_version_or_nothing(tmp_path: Path) -> None:
    """Three real writers SIGKILLed at the worst moments. Readers (`load_bundle`,
    `load_predictor`) then see the previous complete version, or a clean 'no bundle' error
    while the target is absent; never half a file."""
    from food_assets.ml.inference.predictor import load_predictor

    onnx_dir = tmp_path / "onnx_custom_cnn"
    old_onnx = make_onnx(onnx_dir / "model.onnx", ["apple_pie", "pizza", "sushi"], seed=0)
    new_onnx = make_onnx(tmp_path / "new.onnx", ["apple_pie", "pizza", "sushi"], seed=1)
    old_bytes = old_onnx.read_bytes()
    bundles = {m: _bundle(tmp_path / m / "bundle", 0, "v1") for m in
               ("bundle_half_written", "bundle_between_renames")}  # fmt: skip
    reference, _ = load_bundle(tmp_path / "bundle_half_written" / "bundle")

    jobs = {
        "onnx_half_written": (old_onnx, str(new_onnx)),
        **{m: (b, "") for m, b in bundles.items()},
    }
    with contextlib.ExitStack() as stack:
        procs = {}
        for mode, (target, extra) in jobs.items():
            marker = tmp_path / f"{mode}.marker"
            argv = [mode, str(target), str(marker), *([extra] if extra else [])]
            procs[mode] = (stack.enter_context(_child(HANG_WHILE_WRITING, *argv)), marker)
        for proc, marker in procs.values():  # all three run at once: one import wait, not three
            _wait_for(marker, proc)
        for proc, _ in procs.values():
            _kill(proc)

    # ONNX: the old complete file; the half-written temporary sits beside it, hidden.
    assert old_onnx.read_bytes() == old_bytes
    # (A list of booleans here once passed whatever they were; breakage tried: temporaries
    # named without the leading dot, which this now catches.)
    others = [p.name for p in onnx_dir.iterdir() if p != old_onnx]
    assert len(others) == 1 and others[0].startswith(".model.onnx.tmp-"), others
    predictor = load_predictor(onnx_dir)
    assert predictor.path == old_onnx
    assert next(iter(predictor.predict_paths([_image(tmp_path / "x.png")]))).ok

    # Bundle killed while its weights were half written: the old bundle, intact.
    model, card = load_bundle(bundles["bundle_half_written"])
    assert card.weights_source == "v1" and _same_weights(model, reference)
    assert load_predictor(bundles["bundle_half_written"]).model_name == "custom_cnn"

    # Killed between the two renames: the target is absent (a clean error, not half a bundle)
    # and the complete old version waits in .bundle.old-* (docs/operations.md: recovery).
    target = bundles["bundle_between_renames"]
    assert not target.exists()
    with pytest.raises(CheckpointError, match="is not a model bundle"):
        load_bundle(target)
    (old,) = target.parent.glob(".bundle.old-*")
    model, card = load_bundle(old)
    assert card.weights_source == "v1" and _same_weights(model, reference)


def test_exception_mid_write_keeps_the_old_version_and_no_temporaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "splits.parquet"
    artifacts.write_parquet(target, pd.DataFrame({"v": [1]}))
    with pytest.raises(RuntimeError, match="boom"):
        with artifacts.atomic_path(target) as tmp:
            tmp.write_bytes(b"PAR1 half a parquet")
            raise RuntimeError("boom")
    assert pd.read_parquet(target)["v"].tolist() == [1]

    bundle = _bundle(tmp_path / "bundle", 0, "v1")
    reference, _ = load_bundle(bundle)

    real_write = Path.write_bytes

    def fail_halfway(self: Path, data) -> int:
        if self.name != "model.safetensors":
            return real_write(self, data)
        real_write(self, b"\x00" * 100)
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(Path, "write_bytes", fail_halfway)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        _bundle(bundle, 1, "v2")
    model, card = load_bundle(bundle)
    assert card.weights_source == "v1" and _same_weights(model, reference)
    # No temporaries left; the (empty) lock file that serialises folder swaps may stay.
    names = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))
    assert names == ["bundle", "splits.parquet"]


# ------------------------------------------------------------------ 3. concurrent writers


WRITE_CONCURRENTLY = r"""
import json, sys, time
from pathlib import Path
import pandas as pd
import torch
from food_assets.ml import artifacts
from food_assets.ml.errors import ArtifactWriteError
from food_assets.ml.models.bundle import ModelCard, save_bundle
from food_assets.ml.models.registry import create_model, get_model_spec

mode, writer, root, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:  # start both writers together
    time.sleep(0.002)
outcomes = []
if mode == "assets":
    torch.manual_seed(writer)
    pre = get_model_spec("custom_cnn").preprocess().with_size(32)
    card = ModelCard("custom_cnn", ["a", "b", "c"], pre, weights_source=f"writer{writer}")
    model = create_model("custom_cnn", num_classes=3)
    frame = pd.DataFrame({"writer": [writer] * 20000, "row": range(20000)})
    for _ in range(3):
        for fn in (lambda: save_bundle(root / "bundle", model, card),
                   lambda: artifacts.write_parquet(root / "splits.parquet", frame)):
            try:
                fn()
                outcomes.append("ok")
            except ArtifactWriteError as exc:
                outcomes.append(str(exc))
    torch.save(model.state_dict(), root / f"writer{writer}.pt")
else:  # "race": many tiny folder swaps, to hit the window between the two renames
    for i in range(800):
        try:
            with artifacts.atomic_dir(root / "bundle") as tmp:
                (tmp / "a").write_text(str(writer))
                (tmp / "b").write_text(str(writer))
            outcomes.append("ok")
        except ArtifactWriteError as exc:
            outcomes.append(str(exc))
print(json.dumps(outcomes))
"""


def _run_two_writers(mode: str, root: Path) -> list[list[str]]:
    go = root / ".go"
    with (
        _child(WRITE_CONCURRENTLY, mode, "1", str(root), str(go)) as a,
        _child(WRITE_CONCURRENTLY, mode, "2", str(root), str(go)) as b,
    ):
        time.sleep(0.5)
        go.touch()
        outs = []
        for proc in (a, b):
            out, _ = proc.communicate(timeout=WAIT_S)
            assert proc.returncode == 0, out.decode(errors="replace")[-3000:]
            outs.append(json.loads(out.decode().strip().splitlines()[-1]))
    go.unlink()
    return outs


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_runs_writing_the_same_asset_leave_one_complete_version(tmp_path: Path) -> None:
    outcomes = _run_two_writers("assets", tmp_path)
    # Every write either landed or failed with an ArtifactWriteError: nothing else escapes.
    for out in outcomes:
        assert all(o == "ok" or o.startswith("Could not write") for o in out), out
    model, card = load_bundle(tmp_path / "bundle")
    winner = card.weights_source
    assert winner in ("writer1", "writer2")
    expected = torch.load(tmp_path / f"{winner}.pt", weights_only=True)
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    frame = pd.read_parquet(tmp_path / "splits.parquet")
    assert len(frame) == 20000 and frame["writer"].nunique() == 1  # one writer's rows, whole


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_concurrent_folder_swaps_never_fail_and_leak_nothing(tmp_path: Path) -> None:
    outcomes = _run_two_writers("race", tmp_path)
    # The invariant that holds today: the final folder is one writer's, whole.
    contents = {(tmp_path / "bundle" / f).read_text() for f in ("a", "b")}
    assert len(contents) == 1
    failures = [o for out in outcomes for o in out if o != "ok"]
    leaked = list(tmp_path.glob(".bundle.old-*"))
    assert not failures and not leaked, (failures[:3], len(leaked))


# ------------------------------------------------------------------ 4. disk full, read-only


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 20 MB file system (tmpfs), unmounted afterwards; skips where mounting is not
    allowed (not root, or no CAP_SYS_ADMIN), since the errno-injection test covers the rest."""
    mount = Path(tempfile.mkdtemp(prefix="food_assets_full_"))
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)],
            capture_output=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        proc = None
        reason = str(exc)
    if proc is None or proc.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.decode() if proc else reason})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)
        shutil.rmtree(mount, ignore_errors=True)


def test_disk_full_writes_fail_clearly_and_keep_the_previous_version(full_disk: Path) -> None:
    """Real ENOSPC: the previous file stays, the message says the disk is full and what to do,
    and no temporary is left taking space."""
    target = full_disk / "splits.parquet"
    artifacts.write_parquet(target, pd.DataFrame({"v": [1, 2, 3]}))
    big = pd.DataFrame({"x": np.random.default_rng(0).random(3_000_000)})  # ~24 MB
    with pytest.raises(ArtifactWriteError, match="the disk is full: free some space"):
        artifacts.write_parquet(target, big)
    assert pd.read_parquet(target)["v"].tolist() == [1, 2, 3]
    with pytest.raises(ArtifactWriteError, match="previous version .* was left untouched"):
        artifacts.write_bytes(full_disk / "model.onnx", b"\0" * 30_000_000)
    assert sorted(p.name for p in full_disk.iterdir()) == ["splits.parquet"]


@pytest.mark.parametrize(
    "what",
    [
        pytest.param("bundle"),
        pytest.param("checkpoint"),
    ],
)
def test_disk_full_model_files_are_artifact_write_errors(full_disk: Path, what: str) -> None:
    from food_assets.ml.training.callbacks import AtomicCheckpointIO

    if what == "bundle":
        _bundle(full_disk / "bundle", 0, "v1")  # ~16 MB: room for one version, not two
        with pytest.raises(ArtifactWriteError, match="the disk is full"):
            _bundle(full_disk / "bundle", 1, "v2")
        assert load_bundle(full_disk / "bundle")[1].weights_source == "v1"
    else:
        io = AtomicCheckpointIO()
        io.save_checkpoint({"state_dict": {"w": torch.zeros(10)}}, full_disk / "last.ckpt")
        with pytest.raises(ArtifactWriteError, match="the disk is full"):
            io.save_checkpoint(
                {"state_dict": {"w": torch.zeros(6_000_000)}}, full_disk / "last.ckpt"
            )
        assert (
            torch.load(full_disk / "last.ckpt", weights_only=True)["state_dict"]["w"].numel() == 10
        )


WRITE_AS_UNPRIVILEGED = r"""
import sys
import pandas as pd
from food_assets.ml import artifacts
from food_assets.ml.errors import ArtifactWriteError
try:
    artifacts.write_parquet(sys.argv[1], pd.DataFrame({"v": [2]}))
except ArtifactWriteError as exc:
    print(exc)
    sys.exit(3)
"""


def test_read_only_artifact_folder_is_a_clear_permission_error() -> None:
    """Real EACCES. Root ignores mode bits through CAP_DAC_OVERRIDE, so as root the writer runs
    under `setpriv` without that capability (still uid 0: it can import from /root); as a
    normal user chmod alone does it."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without util-linux's setpriv to drop CAP_DAC_OVERRIDE")
        drop = "-dac_override,-dac_read_search"
        prefix = [setpriv, "--bounding-set", drop, "--inh-caps", drop]
    folder = Path(tempfile.mkdtemp(prefix="food_assets_ro_"))
    try:
        target = folder / "splits.parquet"
        artifacts.write_parquet(target, pd.DataFrame({"v": [1]}))
        os.chmod(folder, 0o555)
        with _child(WRITE_AS_UNPRIVILEGED, str(target), prefix=prefix) as proc:
            out, _ = proc.communicate(timeout=WAIT_S)
        text = out.decode(errors="replace")
        assert proc.returncode == 3, text
        assert "permission denied: make the folder writable or choose another artifact root" in text
        assert pd.read_parquet(target)["v"].tolist() == [1]
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder, ignore_errors=True)


def test_disk_full_during_a_materialization_is_a_clean_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the Dagster level (errno injected: ENOSPC raised where the kernel reports it on
    flush/fsync): the step fails with a `Failure` carrying the message, and the previous
    materialization's file is still there and readable."""
    import dagster as dg

    from food_assets.definitions import build_definitions, default_resources

    resources = default_resources(str(tmp_path / "data"))
    defs = build_definitions(resources)
    run_config = {"ops": {"food_images_raw": tiny_run_config()["ops"]["food_images_raw"]}}
    instance = dg.DagsterInstance.ephemeral()
    sel = ["food_images_raw", "food_splits"]
    first = dg.materialize(list(defs.assets), selection=sel, resources=resources,
                           run_config=run_config, instance=instance)  # fmt: skip
    splits_path = first.output_for_node("food_splits").path
    before = splits_path.read_bytes()

    def enospc(path: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(artifacts, "_fsync_file", enospc)
    second = dg.materialize(
        list(defs.assets), selection=["food_splits"], resources=resources,
        run_config={"ops": {"food_splits": {"config": {"seed": 1}}}}, instance=instance,
        raise_on_error=False,
    )  # fmt: skip
    assert not second.success
    (failure,) = second.get_step_failure_events()
    data = failure.step_failure_data
    assert data.error.cls_name == "Failure"
    assert data.user_failure_data.description == (
        f"Could not write {splits_path}: the disk is full: free some space or point the "
        "artifact root elsewhere. The previous version (if any) was left untouched."
    )
    assert splits_path.read_bytes() == before


# ------------------------------------------------------------------ 5. untrusted files


class _Payload:
    """Unpickling this runs code: it writes `marker`. A loader that executes code is caught."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"model.w": torch.zeros(1)}, "hook": _Payload(marker)}, path)
    return path


def test_the_payload_is_live(tmp_path: Path) -> None:
    """Control: the tampered files below *would* run code if loaded the unsafe way."""
    marker = tmp_path / "marker"
    torch.load(_evil_checkpoint(tmp_path / "evil.ckpt", marker), weights_only=False)
    assert marker.read_text() == "code ran"


def test_untrusted_checkpoints_bundles_and_exports_are_refused_without_running_code(
    tmp_path: Path,
) -> None:
    from food_assets.ml.inference.predictor import load_predictor
    from food_assets.ml.models.weights import load_state_dict_file
    from food_assets.ml.training.train import load_checkpoint_file

    marker = tmp_path / "marker"
    evil = _evil_checkpoint(tmp_path / "last.ckpt", marker)

    # A Lightning checkpoint (resume) and a weights file (`weights: /path`): weights_only.
    with pytest.raises(CheckpointError, match="is corrupt"):
        load_checkpoint_file(evil)
    with pytest.raises(CheckpointError, match="is corrupt or not a weights file"):
        load_state_dict_file(evil)

    # A bundle whose model.safetensors is that pickle: safetensors never unpickles.
    bundle = _bundle(tmp_path / "bundle", 0, "v1")
    shutil.copy(evil, bundle / "model.safetensors")
    with pytest.raises(CheckpointError, match="is corrupt or not a safetensors file"):
        load_bundle(bundle)
    with pytest.raises(CheckpointError, match="is corrupt or not a safetensors file"):
        load_predictor(bundle)

    # card.json is data with a schema: a smuggled field is refused.
    bundle = _bundle(tmp_path / "bundle2", 0, "v1")
    card = json.loads((bundle / "card.json").read_text())
    card["__reduce__"] = pickle.dumps(_Payload(marker)).hex()
    (bundle / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"unknown fields \['__reduce__'\]"):
        load_bundle(bundle)

    # ONNX: weights altered after export (hash) and metadata out of schema are both refused.
    import onnx
    from onnx import numpy_helper

    path = make_onnx(tmp_path / "model.onnx", ["a", "b", "c"])
    proto = onnx.load(str(path))
    w = numpy_helper.to_array(proto.graph.initializer[0]).copy()
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(w * 2, "W"))
    onnx.save(proto, str(tmp_path / "weights_changed.onnx"))
    with pytest.raises(CheckpointError, match="hash mismatch"):
        load_predictor(tmp_path / "weights_changed.onnx")
    proto = onnx.load(str(path))
    for p in proto.metadata_props:
        if p.key == "food_assets.preprocess":
            p.value = json.dumps({"input_size": 10**9})
    onnx.save(proto, str(tmp_path / "meta_changed.onnx"))
    with pytest.raises(CheckpointError, match="preprocess must be an object with exactly"):
        load_predictor(tmp_path / "meta_changed.onnx")

    assert not marker.exists()


def test_a_tampered_last_checkpoint_stops_resume_before_anything_runs(tmp_path: Path) -> None:
    from food_assets.ml.training import ComputeConfig, TrainConfig, train_model
    from food_assets.ml.training.train import get_config_hash
    from food_assets_tests.test_ml_training import make_tiny_splits

    splits = make_tiny_splits(tmp_path / "imgs")
    cfg = TrainConfig(mode="scratch", epochs=1, image_size=32, num_workers=0, warmup_epochs=0)
    compute = ComputeConfig(accelerator="cpu", devices=1)
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    ckpts.mkdir(parents=True)
    config_hash, record = get_config_hash("custom_cnn", splits, cfg, compute)
    (ckpts / "run_config.json").write_text(json.dumps({"hash": config_hash, **record}))
    marker = tmp_path / "marker"
    _evil_checkpoint(ckpts / "last.ckpt", marker)
    with pytest.raises(CheckpointError, match="delete it .* to start this training run over"):
        train_model("custom_cnn", splits, cfg, compute, run, progress_bar=False)
    assert not marker.exists()
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "run_config.json"]


def test_config_files_with_python_tags_are_refused(tmp_path: Path) -> None:
    """Run-config YAML and dagster.yaml are parsed as data: a `!!python/object` tag is an
    error, never a call."""
    import dagster as dg
    import yaml

    marker = tmp_path / "marker"
    evil = (
        "ops:\n  food_images_raw:\n    config:\n      root: !!python/object/apply:os.system\n"
        f"        - 'touch {marker}'\n"
    )
    (tmp_path / "run.yaml").write_text(evil)
    with pytest.raises(dg.DagsterInvariantViolationError, match="error attempting to parse yaml"):
        dg.config_from_files([str(tmp_path / "run.yaml")])
    with pytest.raises(yaml.constructor.ConstructorError, match="python/object/apply"):
        yaml.safe_load(evil)  # what the food-assets CLI's --config does
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        f"telemetry:\n  enabled: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    with pytest.raises(yaml.YAMLError):
        dg.DagsterInstance.from_config(str(home))
    assert not marker.exists()
