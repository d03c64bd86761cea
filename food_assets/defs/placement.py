"""Where GPU steps run on a cluster: the one place that says it (ADR 0023).

Every step that uses the GPU declares the `gpu` pool (one such step at a time per instance) and
carries the op tags `gpu_op_tags()` returns:

- `dagster-k8s/config`: the GPU resource limit, CPU and memory requests, a larger /dev/shm
  for the loader workers, the node selector and the tolerations, read by dagster-k8s's
  `k8s_job_executor` for the step's pod;
- `dagster-celery/queue`: the Celery queue served by workers on GPU nodes.

Being op tags, they travel with the definitions: a run launched from the UI, by the nightly
schedule, by a sensor or from the CLI places the step on a GPU node, with no run config. The
laptop's executors ignore both tags.

The defaults below fit a node pool labelled `food-assets/pool: gpu` with the NVIDIA device
plugin's taint. A team changes them in a YAML file named by `FOOD_ASSETS_GPU_PLACEMENT` (the same
field names; read when the code location loads), not in asset code and not in run config.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The concurrency pool of every GPU step (dagster.yaml limits it to one step at a time).
GPU_POOL = "gpu"
#: A YAML file overriding `GpuPlacement`'s defaults.
PLACEMENT_ENV = "FOOD_ASSETS_GPU_PLACEMENT"
K8S_CONFIG_TAG = "dagster-k8s/config"
CELERY_QUEUE_TAG = "dagster-celery/queue"


def _default_tolerations() -> list[dict[str, str]]:
    return [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


@dataclass(frozen=True)
class GpuPlacement:
    """How a GPU step's pod (or Celery task) is placed.

    Attributes:
        gpus: GPUs per step (the resource limit); Lightning DDP over more needs as many here.
        gpu_resource: the extended resource name of the device plugin.
        cpu: CPU request: the loader's workers read and decode while the GPU trains.
        memory: memory request.
        shm_size: size of the in-memory /dev/shm (DataLoader workers share batches through it;
            a pod's default 64 MiB is too small).
        node_selector: labels of the GPU nodes.
        tolerations: taints of the GPU nodes that the pod tolerates.
        celery_queue: the Celery queue of the workers on GPU nodes.
    """

    gpus: int = 1
    gpu_resource: str = "nvidia.com/gpu"
    cpu: str = "8"
    memory: str = "32Gi"
    shm_size: str = "8Gi"
    node_selector: dict[str, str] = field(default_factory=lambda: {"food-assets/pool": "gpu"})
    tolerations: list[dict[str, str]] = field(default_factory=_default_tolerations)
    celery_queue: str = "gpu"

    def k8s_config(self) -> dict[str, Any]:
        """The `dagster-k8s/config` value (dagster-k8s's `UserDefinedDagsterK8sConfig` keys)."""
        return {
            "container_config": {
                "resources": {
                    "requests": {"cpu": self.cpu, "memory": self.memory},
                    "limits": {self.gpu_resource: str(self.gpus)},  # a Kubernetes quantity
                },
                "volume_mounts": [{"name": "dshm", "mount_path": "/dev/shm"}],
            },
            "pod_spec_config": {
                "node_selector": dict(self.node_selector),
                "tolerations": [dict(t) for t in self.tolerations],
                "volumes": [
                    {"name": "dshm", "empty_dir": {"medium": "Memory", "size_limit": self.shm_size}}
                ],
            },
        }

    def op_tags(self) -> dict[str, Any]:
        """The op tags of a GPU step."""
        return {
            K8S_CONFIG_TAG: json.dumps(self.k8s_config(), sort_keys=True),
            CELERY_QUEUE_TAG: self.celery_queue,
        }


class PlacementError(ValueError):
    """The placement file cannot be used; the message names the file and the fix."""


def load_gpu_placement(path: str | os.PathLike[str] | None = None) -> GpuPlacement:
    """The GPU placement: `path`, else the file named by FOOD_ASSETS_GPU_PLACEMENT, over the
    defaults; the defaults when neither is set.

    Raises:
        PlacementError: the file is missing, is not a YAML mapping, or has an unknown field.
    """
    path = path or os.environ.get(PLACEMENT_ENV)
    if not path:
        return GpuPlacement()
    import yaml

    file = Path(path).expanduser()
    try:
        data = yaml.safe_load(file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PlacementError(f"{PLACEMENT_ENV}={file}: cannot read it ({exc})") from None
    if not isinstance(data, dict):
        raise PlacementError(f"{PLACEMENT_ENV}={file}: expected a mapping of GpuPlacement fields")
    known = {f.name for f in dataclasses.fields(GpuPlacement)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PlacementError(
            f"{PLACEMENT_ENV}={file}: unknown field(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return GpuPlacement(**data)


def gpu_op_tags(placement: GpuPlacement | None = None) -> dict[str, Any]:
    """The op tags every GPU step carries (default: `load_gpu_placement()`)."""
    return (placement or load_gpu_placement()).op_tags()


#: Read once, when the asset modules are imported (the code location loads).
GPU_OP_TAGS = gpu_op_tags()
