from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tfship.config import (
    DataSource,
    PipelineConfig,
    StrategyKind,
    dump_config,
    load_config,
    override_variables,
)
from tfship.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "pipeline.yaml"
    p.write_text(text)
    return p


def test_the_repository_pipeline_yaml_is_valid(repo_root: Path) -> None:
    cfg = load_config(repo_root / "pipeline.yaml", env={})
    assert cfg.data.source is DataSource.DEMO
    assert cfg.train.strategy is StrategyKind.AUTO


def test_missing_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml does not exist") as exc:
        load_config(tmp_path / "nope.yaml", env={})
    assert "TFSHIP_CONFIG" in str(exc.value)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("train:\n  epochs: 0\n", ["train.epochs", "greater than or equal to 1", "received 0"]),
        ("train:\n  epochs: many\n", ["train.epochs", "valid integer", 'received "many"']),
        ("train:\n  epocs: 3\n", ["train.epocs", "unknown key"]),
        ("trian:\n  epochs: 3\n", ["trian", "unknown key"]),
        ("train:\n  strategy: tpu\n", ["train.strategy", "'auto', 'default', 'mirrored'", '"tpu"']),
        ("data:\n  source: csv\n", ["data.path is required", "csv"]),
        ("data:\n  channels: 2\n", ["data.channels", "received 2"]),
        ("checkpoint:\n  keep: 1\n", ["checkpoint.keep", "greater than or equal to 2"]),
        ("model:\n  builder: not-a-path\n", ["model.builder", "should match pattern"]),
        ("version: 2\n", ["version", "received 2"]),
        ("- a\n- b\n", ["expected a mapping of sections", "received list"]),
        ("train: [\n", ["not valid YAML"]),
    ],
)
def test_bad_config_is_rejected_with_field_value_and_expectation(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(write(tmp_path, text), env={})
    for fragment in fragments:
        assert fragment in str(exc.value)


def test_environment_overrides_file_and_flags_override_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "train:\n  epochs: 4\n  per_replica_batch_size: 16\n")
    cfg = load_config(
        path,
        env={"TFSHIP_TRAIN_EPOCHS": "7", "TFSHIP_DATA_IMAGE_SIZE": "[16, 16]"},
        overrides=["train.epochs=9"],
    )
    assert cfg.train.epochs == 9
    assert cfg.train.per_replica_batch_size == 16
    assert cfg.data.image_size == (16, 16)


def test_an_invalid_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="environment variable TFSHIP_TRAIN_EPOCHS"):
        load_config(None, env={"TFSHIP_TRAIN_EPOCHS": "-2"})


def test_a_misspelt_override_variable_is_an_error_not_ignored() -> None:
    with pytest.raises(ConfigError, match="TFSHIP_TRAIN_EPOCS"):
        load_config(None, env={"TFSHIP_TRAIN_EPOCS": "3"})


def test_malformed_set_flag_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"expected section\.field=value"):
        load_config(None, env={}, overrides=["train.epochs"])
    with pytest.raises(ConfigError, match="not a config key"):
        load_config(None, env={}, overrides=["epochs=3"])


def test_every_field_has_an_override_variable() -> None:
    variables = override_variables()
    assert variables["TFSHIP_TRAIN_EPOCHS"] == ("train", "epochs")
    n_fields = sum(
        len(info.annotation.model_fields)  # type: ignore[union-attr]
        for name, info in PipelineConfig.model_fields.items()
        if name != "version"
    )
    assert len(variables) == n_fields


def test_config_objects_are_frozen() -> None:
    cfg = load_config(None, env={})
    with pytest.raises(Exception, match="frozen"):
        cfg.train.epochs = 3  # type: ignore[misc]


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, env={}, overrides=["train.epochs=3", "data.limit=100"])
    dump_config(cfg, tmp_path / "config.resolved.yaml")
    again = load_config(tmp_path / "config.resolved.yaml", env={})
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.resolved.yaml").read_text())["train"]["epochs"] == 3


def test_fingerprint_changes_only_with_the_sections_asked_for() -> None:
    a = load_config(None, env={})
    b = load_config(None, env={}, overrides=["train.epochs=3"])
    assert a.fingerprint("data", "model") == b.fingerprint("data", "model")
    assert a.fingerprint() != b.fingerprint()
