"""TF Serving's `models.config` (a text-format ModelServerConfig), built with the real protos.

tfship owns one model's entry: its versions are pinned with `model_version_policy { specific }`
(TF Serving would otherwise load any numeric directory it sees) and its canary/stable routing
is `version_labels`. Entries for other models in the same file are kept as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfship.errors import ConfigError

ModelServerConfig = model_server_config_pb2.ModelServerConfig


@dataclass(frozen=True)
class ModelState:
    """What the server should load for one model: pinned versions and their labels."""

    name: str
    base_path: str
    versions: tuple[int, ...] = ()
    labels: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "versions", tuple(sorted(set(self.versions))))
        object.__setattr__(self, "labels", dict(sorted(self.labels.items())))
        stray = {k: v for k, v in self.labels.items() if v not in self.versions}
        if stray:
            raise ValueError(
                f"labels {stray} point at versions not in {list(self.versions)}; TF Serving "
                "only routes a label to a version it loads"
            )

    def with_versions(self, versions: tuple[int, ...] | list[int] | set[int]) -> ModelState:
        return ModelState(self.name, self.base_path, tuple(versions), self.labels)

    def with_labels(self, labels: Mapping[str, int]) -> ModelState:
        return ModelState(self.name, self.base_path, self.versions, labels)


def parse(text: str, *, origin: str = "models.config") -> model_server_config_pb2.ModelServerConfig:
    cfg = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, cfg)
    except text_format.ParseError as exc:
        raise ConfigError(
            f"{origin} is not a valid ModelServerConfig text proto: {exc}",
            hint="fix or delete the file; `tfship deploy` rewrites it from the model repository",
        ) from exc
    return cfg


def render(cfg: model_server_config_pb2.ModelServerConfig) -> str:
    return text_format.MessageToString(cfg)


def model_state(
    cfg: model_server_config_pb2.ModelServerConfig, name: str, *, origin: str = "models.config"
) -> ModelState | None:
    """tfship's view of one model's entry, or None when the config has no such model.

    An entry TF Serving would refuse (a second entry of the same name, a version outside
    int64's positive range, a label on a version it does not load) is a ConfigError naming it,
    never a crash: the file may have been edited by hand.
    """
    entries = [e for e in cfg.model_config_list.config if e.name == name]
    if len(entries) > 1:
        raise ConfigError(
            f"{origin} has {len(entries)} entries named '{name}'; TF Serving refuses the whole "
            "file",
            hint="keep one entry per model name (tfship rewrites its own on the next deploy)",
        )
    for entry in entries:
        policy = entry.model_version_policy
        kind = policy.WhichOneof("policy_choice")
        if kind not in (None, "specific"):
            raise ConfigError(
                f"models.config serves '{name}' with model_version_policy {{ {kind} }}; "
                "tfship manages versions with `specific` only",
                hint="replace the policy with `specific { versions: ... }` or remove the entry",
            )
        versions = tuple(policy.specific.versions) if kind == "specific" else ()
        try:
            if any(v < 0 for v in versions):
                raise ValueError(f"negative version in {list(versions)}")
            return ModelState(name, entry.base_path, versions, dict(entry.version_labels))
        except ValueError as exc:
            raise ConfigError(
                f"{origin}: the entry for '{name}' is not one TF Serving can serve: {exc}",
                hint="fix or remove the entry by hand; `tfship status` shows the labels the "
                "deploy log recorded last",
            ) from exc
    return None


def without_model(
    cfg: model_server_config_pb2.ModelServerConfig | None, name: str
) -> model_server_config_pb2.ModelServerConfig:
    """A copy of `cfg` without the entry for `name` (others kept in order)."""
    out = model_server_config_pb2.ModelServerConfig()
    if cfg is not None:
        out.CopyFrom(cfg)
    entries = out.model_config_list.config
    for i in reversed(range(len(entries))):
        if entries[i].name == name:
            del entries[i]
    out.model_config_list.SetInParent()
    return out


def with_model(
    cfg: model_server_config_pb2.ModelServerConfig | None, state: ModelState
) -> model_server_config_pb2.ModelServerConfig:
    """A copy of `cfg` whose entry for `state.name` is replaced (or added); others kept."""
    out = model_server_config_pb2.ModelServerConfig()
    if cfg is not None:
        out.CopyFrom(cfg)
    entries = out.model_config_list.config
    entry = next((e for e in entries if e.name == state.name), None)
    if entry is None:
        entry = entries.add()
        entry.name = state.name
        entry.model_platform = "tensorflow"
    entry.base_path = state.base_path
    entry.model_version_policy.Clear()
    entry.model_version_policy.specific.versions.extend(state.versions)
    if not state.versions:
        # An empty `specific` list is valid and loads nothing (keeps the oneof set explicitly).
        entry.model_version_policy.specific.SetInParent()
    entry.version_labels.clear()
    for label, version in state.labels.items():
        entry.version_labels[label] = version
    return out
