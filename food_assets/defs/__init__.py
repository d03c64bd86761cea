"""Every piece of Dagster code: the assets and their checks, the IO manager, the resources and
their config classes, the jobs, schedules and sensors, the run guard and the reaper of dead runs.

Only the composition root (`food_assets.definitions`) and the launcher above it import from
here; nothing below (`tracking`, `catalog`, `resolver`, `storage`, `layout`, `ml`, `server`)
does, so the rest of the package runs without Dagster (ADR 0026).
"""
