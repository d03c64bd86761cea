"""A team code location: the same assets on the Kubernetes executor (needs `dagster-k8s`).

The laptop location (`food_assets.definitions`) keeps Dagster's default multiprocess executor;
this one only adds an executor, so assets, resources and schedules are identical. Point the
team's workspace.yaml at it:

    load_from:
      - python_file: configs/team/definitions_k8s.py

GPU placement is on the GPU steps themselves: op tags `dagster-k8s/config` (GPU limit, node
selector, tolerations) and `dagster-celery/queue: gpu` from `food_assets/defs/placement.py` (ADR
0023), so every launch path (UI, schedule, sensor, CLI) places them; the executor's run config
(configs/team/k8s_executor.yaml) gives every step its CPU pod. The Celery alternative is
`dagster_celery.celery_executor` here, with workers on GPU nodes serving the `gpu` queue
(`celery -A dagster_celery.app worker -Q gpu`, see docs/operations.md).
"""

import dagster as dg
from dagster_k8s import k8s_job_executor

from food_assets.definitions import build_definitions

defs = dg.Definitions.merge(build_definitions(), dg.Definitions(executor=k8s_job_executor))
