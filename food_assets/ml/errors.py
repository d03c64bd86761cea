"""User-facing errors.

Every error a user can cause (a wrong path, a bad config value, a missing weight file, a corrupt
checkpoint) is a `FoodAssetsError` whose message says what went wrong and how to fix it. The
Dagster layer turns them into `dagster.Failure` and the CLI prints them, so a user mistake never
shows a traceback.
"""

from __future__ import annotations


class FoodAssetsError(Exception):
    """Base class: the message is written for the user, not the developer."""


class DataSourceError(FoodAssetsError):
    """A dataset root, layout or class set is unusable."""


class ConfigError(FoodAssetsError):
    """A configuration value is invalid."""


class WeightsNotFoundError(FoodAssetsError):
    """Pretrained weights were asked for but no source has them."""


class CheckpointError(FoodAssetsError):
    """A checkpoint or export is missing, corrupt, tampered with or does not fit."""


class ArtifactWriteError(FoodAssetsError):
    """Writing an artifact failed (disk full, permissions); the previous version is untouched."""


class UnknownModelError(FoodAssetsError):
    """A model name that is not in the registry."""
