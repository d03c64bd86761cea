"""GPU placement on every launch path (`food_assets/defs/placement.py`, ADR 0023): every step in the
`gpu` pool carries the `dagster-k8s/config` and `dagster-celery/queue` op tags, and dagster-k8s
turns them into a pod on a GPU node for a run launched the way the UI launches one."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml

from food_assets.definitions import defs
from food_assets.defs import placement

ROOT = Path(__file__).resolve().parents[1]
K8S_EXECUTOR = ROOT / "configs" / "team" / "k8s_executor.yaml"
GPU_KINDS = ("model", "evaluation", "gradcam", "onnx")


def _op_tags_by_asset(definitions: dg.Definitions) -> dict[str, tuple[str | None, dict]]:
    """{asset: (pool, op tags)} over the code location's assets."""
    out = {}
    for assets_def in definitions.resolve_asset_graph().assets_defs:
        op = assets_def.op
        for key in assets_def.keys:
            out[key.to_user_string()] = (op.pool, dict(op.tags))
    return out


def test_every_gpu_step_and_only_those_carry_the_placement_tags() -> None:
    """Every asset in the `gpu` pool (model_, evaluation_, gradcam_, onnx_ of each entry) has
    both op tags, equal to `GPU_OP_TAGS`; no other asset has either. Breakage tried: `op_tags`
    dropped from the Grad-CAM factory (the gradcam_* assets fail); the tags put on
    `food_splits` (the CPU case fails)."""
    from dagster_k8s.job import get_user_defined_k8s_config

    by_asset = _op_tags_by_asset(defs)
    gpu = {a for a, (pool, _) in by_asset.items() if pool == placement.GPU_POOL}
    assert {a.split("_", 1)[0] for a in gpu} == {"model", "evaluation", "gradcam", "onnx"}
    for asset, (pool, tags) in by_asset.items():
        has = {placement.K8S_CONFIG_TAG, placement.CELERY_QUEUE_TAG} & set(tags)
        if pool == placement.GPU_POOL:
            assert {k: tags[k] for k in has} == placement.GPU_OP_TAGS, asset
        else:
            assert not has, asset
    config = get_user_defined_k8s_config(by_asset["model_custom_cnn"][1])
    assert config.container_config["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_the_placement_file_is_the_one_place_to_change_it(tmp_path, monkeypatch) -> None:
    """A YAML file named by FOOD_ASSETS_GPU_PLACEMENT changes the tags (2 GPUs, another node
    label, queue); an unknown field is one clear error naming the file and the known fields.
    Breakage tried: the env var ignored (the override case fails)."""
    file = tmp_path / "gpu.yaml"
    file.write_text(
        yaml.safe_dump({"gpus": 2, "node_selector": {"pool": "a100"}, "celery_queue": "a100"})
    )
    monkeypatch.setenv(placement.PLACEMENT_ENV, str(file))
    tags = placement.gpu_op_tags()
    k8s = json.loads(tags[placement.K8S_CONFIG_TAG])
    assert k8s["container_config"]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert k8s["pod_spec_config"]["node_selector"] == {"pool": "a100"}
    assert tags[placement.CELERY_QUEUE_TAG] == "a100"
    file.write_text("gpu: 2\n")
    with pytest.raises(placement.PlacementError, match=r"gpu\.yaml: unknown field\(s\) gpu;"):
        placement.load_gpu_placement()
    monkeypatch.delenv(placement.PLACEMENT_ENV)
    assert placement.load_gpu_placement() == placement.GpuPlacement()


# --- a run launched as the UI launches one ----------------------------------------------------


@pytest.fixture(scope="module")
def launched_plans():
    """Runs launched through Dagster's GraphQL `launchPipelineExecution` (the UI's mutation)
    against the real code location, on an instance whose runs queue (no daemon runs them):
    a selection of assets on `__ASSET_JOB` (the UI's Materialize), the `reevaluate` job (what the
    nightly schedule launches) and `train_all`. Returns {label: {step key: (pool, step tags)}}
    from each run's stored execution plan, the plan its executor launches steps from."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
    from dagster_graphql.client.query import LAUNCH_PIPELINE_EXECUTION_MUTATION
    from dagster_graphql.test.utils import execute_dagster_graphql

    origin = InProcessCodeLocationOrigin(
        loadable_target_origin=LoadableTargetOrigin(
            module_name="food_assets.definitions", attribute="defs"
        ),
        location_name="food_assets",
    )
    queued = {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}
    ui_selection = ["food_splits"] + [f"{k}_custom_cnn" for k in GPU_KINDS]
    launches = {
        "ui": ("__ASSET_JOB", [{"path": [a]} for a in ui_selection]),
        "schedule": ("reevaluate", None),
        "train_all": ("train_all", None),
    }
    plans = {}
    with dg.instance_for_test(overrides={"run_coordinator": queued}) as instance:
        target = InProcessWorkspaceLoadTarget([origin])
        with WorkspaceProcessContext(instance, target) as process:
            context = process.create_request_context()
            for label, (job, selection) in launches.items():
                selector = {
                    "repositoryLocationName": "food_assets",
                    "repositoryName": "__repository__",
                    "pipelineName": job,
                }
                if selection:
                    selector["assetSelection"] = selection
                params = {"selector": selector, "mode": "default", "runConfigData": {}}
                result = execute_dagster_graphql(
                    context,
                    LAUNCH_PIPELINE_EXECUTION_MUTATION,
                    variables={"executionParams": params},
                )
                launched = result.data["launchPipelineExecution"]
                assert launched["__typename"] == "LaunchRunSuccess", launched
                run = instance.get_run_by_id(launched["run"]["runId"])
                snap = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
                plans[label] = {s.key: (s.pool, dict(s.tags or {})) for s in snap.steps}
    return plans


def _step_job(step_tags: dict):
    """The Kubernetes Job dagster-k8s's `k8s_job_executor` would create for a step: the shipped
    executor config's `step_k8s_config` merged with the step's `dagster-k8s/config` tag, in the
    order `K8sStepHandler._get_container_context` merges them, built by
    `construct_dagster_k8s_job` (the function `K8sStepHandler.launch_step` calls)."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
        get_user_defined_k8s_config,
    )

    executor = yaml.safe_load(K8S_EXECUTOR.read_text())["execution"]["config"]
    context = K8sContainerContext(
        namespace=executor["job_namespace"],
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(executor["step_k8s_config"]),
    ).merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags)))
    job_config = DagsterK8sJobConfig(
        job_image="food-assets:test", dagster_home="/opt/dagster/dagster_home"
    )
    return construct_dagster_k8s_job(
        job_config, ["dagster", "api", "execute_step"], "dagster-step-test",
        user_defined_k8s_config=context.run_k8s_config,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("label", ["ui", "schedule", "train_all"])
def test_a_launched_run_places_each_gpu_step_on_a_gpu_node(launched_plans, label) -> None:
    """For each launch path, every GPU step's Kubernetes Job asks for one GPU, 8 CPUs and
    32 GiB, selects the GPU nodes, tolerates their taint and mounts the in-memory /dev/shm, and
    its Celery queue is `gpu`; a CPU step (the data assets) gets the executor's CPU pod only.
    Breakage tried: `op_tags` dropped from the model factory (the `ui` and `train_all` cases
    fail: no GPU limit); the tag's JSON keyed `container` instead of `container_config`
    (dagster-k8s rejects it)."""
    steps = launched_plans[label]
    gpu_steps = [k for k, (pool, _) in steps.items() if pool == placement.GPU_POOL]
    expected = {"ui": set(GPU_KINDS), "schedule": {"evaluation"}, "train_all": {"model"}}
    assert {k.split("_", 1)[0] for k in gpu_steps} == expected[label], steps
    for key in gpu_steps:
        tags = steps[key][1]
        assert tags[placement.CELERY_QUEUE_TAG] == "gpu", key
        pod = _step_job(tags).spec.template.spec
        resources = pod.containers[0].resources
        assert resources.limits == {"nvidia.com/gpu": "1"}, key
        assert resources.requests == {"cpu": "8", "memory": "32Gi"}, key
        assert pod.node_selector == {"food-assets/pool": "gpu"}, key
        assert [(t.key, t.effect) for t in pod.tolerations] == [("nvidia.com/gpu", "NoSchedule")]
        assert "/dev/shm" in {m.mount_path for m in pod.containers[0].volume_mounts}
    cpu_steps = [k for k, (pool, _) in steps.items() if pool != placement.GPU_POOL]
    assert label == "schedule" or "food_splits" in cpu_steps
    for key in cpu_steps:
        tags = steps[key][1]
        pod = _step_job(tags).spec.template.spec
        assert not pod.node_selector and not (pod.containers[0].resources.limits or {}), key
        assert pod.containers[0].resources.requests == {"cpu": "2", "memory": "8Gi"}, key
        assert placement.CELERY_QUEUE_TAG not in tags, key
