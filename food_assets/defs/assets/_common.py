"""Helpers every asset module uses: user errors as clean failures, metadata for the UI."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from food_assets.ml.errors import FoodAssetsError
from food_assets.ml.quality import CheckOutcome
from food_assets.tracking.redact import redact_uri


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """A `FoodAssetsError` becomes a `dagster.Failure` with its message: no traceback for a
    user mistake in the UI or the CLI, and no retry of something that cannot succeed.

    So does an interrupt (Ctrl-C, SIGTERM: Dagster raises `DagsterExecutionInterruptedError`
    in the step): Dagster would honour the retry policy and start the step again after the
    delay, holding the pool slot, where the user asked for it to stop (ADR 0025)."""
    try:
        yield
    except FoodAssetsError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
        raise dg.Failure(
            description="interrupted (Ctrl-C or SIGTERM): stopped, not retried; materialize "
            "again to resume from the last checkpoint",
            allow_retries=False,
        ) from None


def md_table(frame: pd.DataFrame, *, max_rows: int = 50, floatfmt: str = ".4g") -> dg.MetadataValue:
    """A DataFrame as a Markdown table (the first `max_rows` rows)."""
    shown = frame.head(max_rows)
    text = shown.to_markdown(index=False, floatfmt=floatfmt)
    if len(frame) > max_rows:
        text += f"\n\n… {len(frame) - max_rows} more rows"
    return dg.MetadataValue.md(text)


def file_ref(path: str | Path, store: Any = None) -> dg.MetadataValue:
    """A plot (or any file) as a reference to where it lives under the artifact root: a path,
    or a URL for a remote root (`ArtifactStore.location`). Never the bytes: a base64 PNG in
    metadata lands in the run storage's event log once per materialization (33 MB for a
    101-class run before this; `benchmarks/event_log_size.py`)."""
    location = redact_uri(store.location(path)) if store is not None else str(path)
    if "://" in location and not location.startswith("file://"):
        return dg.MetadataValue.url(location)
    return dg.MetadataValue.path(location)


def _column_type(dtype: Any) -> str:
    kind = getattr(dtype, "kind", "O")
    return {"i": "int", "u": "int", "f": "float", "b": "bool", "M": "datetime"}.get(kind, "string")


def table_metadata(frame: pd.DataFrame) -> dict[str, Any]:
    """`dagster/row_count` and `dagster/column_schema` of a table an asset wrote: the UI shows
    them natively (row count on the asset, columns in its definition tab)."""
    schema = dg.TableSchema(
        columns=[dg.TableColumn(str(c), _column_type(t)) for c, t in frame.dtypes.items()]
    )
    return {
        "dagster/row_count": dg.MetadataValue.int(len(frame)),
        "dagster/column_schema": dg.MetadataValue.table_schema(schema),
    }


def plain(value: Any) -> Any:
    """Make a value safe for Dagster metadata (numpy scalars, paths, None)."""
    if value is None:
        return dg.MetadataValue.text("n/a")
    if isinstance(value, Path):
        return dg.MetadataValue.path(str(value))
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        return value.item()
    return value


#: How every check that evaluated nothing begins its description.
NOT_EVALUATED = "not evaluated: "


def check_result(
    outcome: CheckOutcome, *, metadata: dict[str, Any] | None = None, **kwargs: Any
) -> dg.AssetCheckResult:
    """A pure check decision (`food_assets.ml.quality`) as Dagster's check result; `kwargs` go
    to `AssetCheckResult` (check_name, severity)."""
    return dg.AssetCheckResult(
        passed=outcome.passed,
        description=outcome.description,
        metadata={**outcome.metadata, **(metadata or {})},
        **kwargs,
    )


def not_evaluated(reason: str, *, check_name: str | None = None) -> dg.AssetCheckResult:
    """The result of a check that evaluated nothing (its model was skipped, the model has no
    Grad-CAM layer or no ONNX export). Not a pass: `passed=False`, at WARN severity, which
    Dagster does not let block downstream assets, so `leaderboard` still runs and lists
    the skipped model (ADR 0002, ADR 0007). Dagster 1.13 has no "no result" for a declared
    check: a step that yields none fails."""
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=NOT_EVALUATED + reason,
        metadata={"evaluated": False, "reason": reason},
    )


@dataclass(frozen=True)
class Skipped:
    """The value of an asset that could not run for a stated reason (CLIP without weights on
    the sample source). Downstream assets pass it on, so the run completes, the UI shows why,
    and `leaderboard` still lists every model."""

    name: str
    reason: str


def skipped_output(context: dg.AssetExecutionContext, name: str, reason: str) -> dg.Output:
    context.log.warning(f"{context.asset_key.to_user_string()} skipped: {reason}")
    return dg.Output(
        Skipped(name=name, reason=reason),
        metadata={"skipped": True, "reason": reason},
        tags={"food_assets/skipped": "true"},
    )


# -- automation: code versions, freshness, retries (docs/adr/0011-dagster-automation.md) ---------

#: The nightly re-evaluation (03:00 UTC) refreshes evaluations and the leaderboard; a night
#: missed shows as WARN after a day, FAIL after two.
REEVALUATION_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=48), warn_window=timedelta(hours=26)
)

#: Training is long and resumes from `last.ckpt`: a crash (OOM, a lost node) is retried; a user
#: mistake is not (`user_errors` raises `Failure(allow_retries=False)`).
TRAINING_RETRY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL)

_PACKAGE_DIR = Path(__file__).resolve().parents[2]  # food_assets/


def _module_files(module: str) -> list[Path]:
    """The source files of a first-party module or package (found by path: nothing imported)."""
    parts = module.split(".")
    if parts[0] != _PACKAGE_DIR.name:
        return []
    base = _PACKAGE_DIR.joinpath(*parts[1:])
    if base.is_dir():
        return sorted(base.rglob("*.py"))
    file = base.with_suffix(".py")
    return [file] if file.is_file() else []


def _first_party_imports(file: Path) -> set[str]:
    """The `food_assets.*` modules a file imports (one level: what the hook's module calls)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith(_PACKAGE_DIR.name + ".")}


def qualified_name(obj: Any) -> str:
    """`module:qualname` of a hook (a `module:qualname` string as it is); a partial with its
    arguments."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, functools.partial):
        kwargs = sorted(obj.keywords.items())
        return f"partial({qualified_name(obj.func)}, {obj.args!r}, {kwargs!r})"
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def _hook_module(obj: Any) -> str:
    return qualified_name(obj).removeprefix("partial(").split(":")[0]


def source_digest(modules: Iterable[str], *, follow_imports: bool = False) -> str:
    """sha256 of the source text of `modules` (packages: every file under them); with
    `follow_imports`, also of the first-party modules each file imports."""
    files: set[Path] = set()
    for module in modules:
        files.update(_module_files(module))
    if follow_imports:
        for file in list(files):
            for module in _first_party_imports(file):
                files.update(_module_files(module))
    digest = hashlib.sha256()
    for file in sorted(files):
        digest.update(file.relative_to(_PACKAGE_DIR).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def code_version(*parts: Any, modules: Iterable[str] = ()) -> str:
    """A short, stable code version from `parts` (reprs) and the source of `modules`."""
    digest = hashlib.sha256(repr(parts).encode())
    digest.update(source_digest(modules).encode())
    return digest.hexdigest()[:16]


#: The shared pieces every model passes through (preprocessing, datasets, bundles).
MODEL_SHARED_MODULES = (
    "food_assets.ml.data.transforms",
    "food_assets.ml.data.dataset",
    "food_assets.ml.models.bundle",
    "food_assets.ml.models.registry",
)


def spec_code_version(spec: Any) -> str:
    """`model_<name>`'s code version: the entry's data fields, its hooks' qualified names, and
    the source of the hooks' modules (and what they import from food_assets) and of the shared
    model modules. A changed entry, fit hook, builder or preprocessing makes the model stale."""
    from food_assets.ml.training.config import DEFAULT_FIT, settings_class

    hooks = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    # The effective hooks (an entry without its own trains with Lightning), so that a change to
    # the default trainer makes its models stale too; the default by name (no Lightning import).
    hooks["fit"], hooks["config_cls"] = spec.fit or DEFAULT_FIT, settings_class(spec)
    callables = ("build", "preprocess", "fit", "config_cls", "cam_reshape")
    # The floors gate the evaluation, not the model: changing one must not retrain it.
    data = {k: v for k, v in hooks.items() if k not in callables and k != "accuracy_floors"}
    data["config_defaults"] = sorted(dict(data.get("config_defaults") or {}).items())
    names = {k: qualified_name(hooks[k]) for k in callables if hooks.get(k) is not None}
    modules = {_hook_module(hooks[k]) for k in callables if hooks.get(k) is not None}
    hook_source = source_digest(sorted(modules), follow_imports=True)
    return code_version(
        repr(data), sorted(names.items()), hook_source, modules=MODEL_SHARED_MODULES
    )
