"""A team code location: the same assets on the Kubernetes executor (needs `dagster-k8s`).

The laptop location (`food_assets.definitions`) keeps Dagster's default multiprocess executor;
this one only adds an executor, so assets, resources and schedules are identical. Point the
team's workspace.yaml at it:

    load_from:
      - python_file: configs/team/definitions_k8s.py

GPU placement per step is run config (configs/team/k8s_executor.yaml). The Celery alternative
is `dagster_celery.celery_executor` here, with training steps routed to a `gpu` queue whose
workers run on GPU nodes (op tag `dagster-celery/queue: gpu`, see docs/operations.md).
"""

import dagster as dg
from dagster_k8s import k8s_job_executor

from food_assets.definitions import build_definitions

defs = dg.Definitions.merge(build_definitions(), dg.Definitions(executor=k8s_job_executor))
