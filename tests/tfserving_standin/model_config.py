"""ModelServerConfig: reading the text-protobuf file and validating a config as ServerCore does.

Sources (tensorflow/serving):
* main.cc / server.cc: ``--model_config_file`` is a text-format ``ModelServerConfig``; an
  unparsable file is ``Invalid protobuf file``; ``--model_name``/``--model_base_path`` build a
  one-model config with ``model_platform: "tensorflow"`` (``BuildSingleModelConfig``).
* model_servers/server_core.cc ``ReloadConfig``: only ModelConfigList -> ModelConfigList
  transitions (FAILED_PRECONDITION otherwise); an empty config is a no-op;
  ``ValidateModelConfigList`` (a model listed twice -> INVALID_ARGUMENT);
  ``ValidateNoModelsChangePlatforms``; ``GetPlatform`` (platform required, INVALID_ARGUMENT);
  ``CreateStoragePathRoutes`` (unsupported platform -> INVALID_ARGUMENT).
* config/model_server_config.proto and sources/storage_path/file_system_storage_path_source.proto:
  ``model_version_policy`` is ``latest {num_versions}`` (default: latest 1), ``all {}`` or
  ``specific {versions}``.
"""

from __future__ import annotations

from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tests.tfserving_standin.status import ServingError, failed_precondition, invalid_argument

ModelServerConfig = model_server_config_pb2.ModelServerConfig
ModelConfig = model_server_config_pb2.ModelConfig
TENSORFLOW_PLATFORM = "tensorflow"


def read_config_file(path: str) -> ModelServerConfig:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ServingError("NOT_FOUND", f"{path}; {exc.strerror or exc}") from exc
    config = ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise invalid_argument(f"Invalid protobuf file: '{path}' ({exc})") from exc
    return config


def single_model_config(model_name: str, base_path: str) -> ModelServerConfig:
    config = ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = model_name
    model.base_path = base_path
    model.model_platform = TENSORFLOW_PLATFORM
    return config


def _platform(model: ModelConfig) -> str:
    # model_type is deprecated; 1 == TENSORFLOW (config/model_server_config.proto).
    if model.model_type != 0:
        if model.model_platform:
            raise invalid_argument(
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                "ModelServerConfig::model_platform."
            )
        if model.model_type == 1:
            return TENSORFLOW_PLATFORM
        raise invalid_argument(
            f"ModelServerConfig::model_type choice {model.model_type} not supported."
        )
    if not model.model_platform:
        raise invalid_argument(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform."
        )
    return model.model_platform


def validate_transition(old: ModelServerConfig | None, new: ModelServerConfig) -> None:
    """Raise the error ServerCore::ReloadConfig returns for ``new``, before anything changes."""
    old_case = None if old is None else old.WhichOneof("config")
    new_case = new.WhichOneof("config")
    if old_case is not None and not (old_case == new_case == "model_config_list"):
        raise failed_precondition(
            "Cannot transition to requested config. It is only legal to transition from one "
            "ModelConfigList to another."
        )
    if new_case is None:
        return
    if new_case != "model_config_list":
        raise invalid_argument(
            "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
            "ModelConfigList is currently supported"
        )
    seen: set[str] = set()
    for model in new.model_config_list.config:
        if model.name in seen:
            raise invalid_argument(
                f"Illegal to list model {model.name} multiple times in config list"
            )
        seen.add(model.name)
    old_platforms = {}
    if old is not None and old_case == "model_config_list":
        old_platforms = {m.name: _platform(m) for m in old.model_config_list.config}
    for model in new.model_config_list.config:
        platform = _platform(model)
        if model.name in old_platforms and old_platforms[model.name] != platform:
            raise invalid_argument(
                f"Illegal to change a model's platform. For model {model.name} platform was "
                f"{old_platforms[model.name]} and new platform requested is {platform}"
            )
        if platform != TENSORFLOW_PLATFORM:
            raise invalid_argument(f"Model {model.name} requests unsupported platform {platform}")


def aspired_versions(model: ModelConfig, on_disk: list[int]) -> list[int]:
    """The versions the model's policy selects among the numeric directories found."""
    policy = model.model_version_policy
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return sorted(on_disk)
    if which == "specific":
        wanted = set(policy.specific.versions)
        return sorted(v for v in on_disk if v in wanted)
    n = policy.latest.num_versions if which == "latest" and policy.latest.num_versions else 1
    return sorted(on_disk)[-n:] if on_disk else []
