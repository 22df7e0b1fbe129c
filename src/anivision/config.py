"""What every run configuration shares: JSON round trips, YAML files and the same-run rule.

Each task's config is a dataclass that mixes in :class:`RunConfig` (``TrainConfig`` for
classification, ``FewShotTrainConfig``, ``RetrievalConfig``) and names its ``RUNTIME_KEYS``:
settings that may change when a run folder is resumed or reused because they do not change
results (device, workers, cache folder, the folder's own path). Library functions take the
typed object; only the CLI merges YAML files and flags into one.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

import yaml

from anivision.errors import AnivisionError
from anivision.files import absolute_if_file, absolute_path, atomic_write_json, same_location

C = TypeVar("C", bound="RunConfig")


class RunConfig:
    """Mixin for config dataclasses whose fields all have defaults."""

    #: Keys that may differ between a saved ``config.json`` and the run that reuses its folder.
    RUNTIME_KEYS: ClassVar[tuple[str, ...]] = ()
    #: Data locations, recorded absolute: the same when they name the same place, or when the
    #: saved place is gone (the data moved; the task checks what lies at the new place).
    DATA_KEYS: ClassVar[tuple[str, ...]] = ()
    #: A weights name or file (a file recorded absolute): a file must be the same file.
    FILE_KEYS: ClassVar[tuple[str, ...]] = ()
    #: What a key missing from a saved config (written before the key existed) stands for, when
    #: that is not today's default (e.g. a few-shot run from before the transfer embedding).
    MISSING_MEANS: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def known_keys(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any], source: str = "config") -> C:
        """Build from a JSON/YAML mapping; lists become tuples where the default is a tuple.

        Raises:
            AnivisionError: a key this version does not know (named with ``source``).
        """
        unknown = sorted(set(d) - cls.known_keys())
        if unknown:
            raise AnivisionError(f"{source}: unknown config key(s) {', '.join(unknown)} (made by another anivision version?)")
        values = {**cls.MISSING_MEANS, **d}
        defaults = cls().to_dict()  # type: ignore[call-arg]
        for k, v in values.items():
            if isinstance(v, list) and isinstance(defaults.get(k), tuple):
                values[k] = tuple(v)
        return cls(**cls._coerce(values))  # type: ignore[call-arg]

    @classmethod
    def _coerce(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Hook for nested dataclasses (e.g. the augmentation settings)."""
        return values

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        p = Path(path)
        if not p.is_file():
            raise AnivisionError(f"{p}: no such config file")
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise AnivisionError(f"{p}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
        return cls.from_dict(d, source=str(p))

    def differences(self, old: Mapping[str, Any], source: str = "config.json") -> list[str]:
        """Keys whose value in a saved config differs from this one, runtime keys aside.

        The same-run rule, one for every task: a key missing from ``old`` (saved by an older
        anivision, before the field existed) counts as its default; a key this version does not
        know is an error, because its meaning cannot be checked.
        """
        unknown = sorted(set(old) - self.known_keys())
        if unknown:
            raise AnivisionError(f"{source}: unknown config key(s) {', '.join(unknown)}; this run folder was made by another anivision version")
        defaults = json.loads(json.dumps({**type(self)().to_dict(), **self.MISSING_MEANS}, default=list))  # type: ignore[call-arg]
        new = json.loads(json.dumps(self.to_dict(), default=list))
        return sorted(
            k for k in new
            if k not in self.RUNTIME_KEYS and old.get(k, defaults[k]) != new[k]
            and not (k in self.DATA_KEYS + self.FILE_KEYS and same_location(old.get(k), new[k], moved_ok=k in self.DATA_KEYS))
        )

    def with_absolute_paths(self: C) -> C:
        """A copy with the data locations and a weights file absolute (what ``config.json`` records)."""
        values = {k: absolute_path(getattr(self, k)) for k in self.DATA_KEYS if getattr(self, k)}
        values.update({k: absolute_if_file(getattr(self, k)) for k in self.FILE_KEYS})
        return dataclasses.replace(self, **values)  # type: ignore[type-var]


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file of config keys (``-`` in keys read as ``_``).

    Raises:
        AnivisionError: missing file, invalid YAML or not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise AnivisionError(f"{p}: no such config file")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise AnivisionError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(loaded, dict):
        raise AnivisionError(f"{p}: expected a mapping of config keys")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}
