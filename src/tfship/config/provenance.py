"""Where each configuration value came from: the committed file, a variable, a flag, a default.

`load_config` records one `ConfigSources` per configuration; `of(key)` answers for any dotted
key (a field, or deeper: `gate.absolute.accuracy.min`), so gate.json can say for each check
which file at which commit, or which variable set by whom, decided its threshold.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tfship.config.committed import FileOrigin
from tfship.config.fields import FIELDS

DEFAULT = "default"


@dataclass(frozen=True)
class Override:
    """One value set outside the config file."""

    key: str  # dotted key as given: gate.absolute or gate.absolute.accuracy.min
    origin: str  # "environment variable TFSHIP_GATE_ABSOLUTE" | "--set gate.absolute..."
    decided_by: str  # tfship.config.trust.Context.describe(): who, and why it was allowed

    @property
    def label(self) -> str:
        return f"{self.origin} ({self.decided_by})"


def file_keys(tree: Any, prefix: str = "") -> frozenset[str]:
    """Every dotted key present in a loaded YAML mapping (sections, fields and deeper)."""
    out: set[str] = set()
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            key = f"{prefix}{k}"
            out.add(key)
            out |= file_keys(v, f"{key}.")
    return frozenset(out)


def _covers(outer: str, inner: str) -> bool:
    return inner == outer or inner.startswith(outer + ".")


@dataclass(frozen=True)
class ConfigSources:
    """Provenance of one loaded configuration."""

    file: FileOrigin | None = None
    keys_in_file: frozenset[str] = frozenset()
    overrides: tuple[Override, ...] = ()
    recorded: bool = True  # False for a config built in code (tests, library use)

    def of(self, key: str) -> str:
        """Where the value at `key` came from (the last writer wins, as when loading)."""
        if not self.recorded:
            return "not recorded (configuration built in code, not by load_config)"
        for ov in reversed(self.overrides):
            if _covers(ov.key, key):
                return ov.label
        # A section key ("gate:") says nothing about its fields; a field key covers its value.
        in_file = self.file is not None and any(
            k == key or ("." in k and _covers(k, key)) or _covers(key, k) for k in self.keys_in_file
        )
        parts = [self.file.label] if in_file and self.file is not None else []
        # Deeper overrides (key is gate.absolute, --set gate.absolute.accuracy.min) share it.
        parts += dict.fromkeys(ov.label for ov in self.overrides if _covers(key, ov.key))
        return "; ".join(parts) or DEFAULT

    def fields(self, names: Iterable[str] = FIELDS) -> dict[str, str]:
        """section.field -> source, for every field that is not at its default."""
        if not self.recorded:
            return {}
        out = {name: self.of(name) for name in names}
        return {k: v for k, v in out.items() if v != DEFAULT}

    def to_dict(self) -> dict[str, Any]:
        return {
            "recorded": self.recorded,
            "file": None if self.file is None else self.file.to_dict(),
            "fields": self.fields(),
        }


UNRECORDED = ConfigSources(recorded=False)
