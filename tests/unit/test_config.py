from __future__ import annotations

import json
import os
import shutil
import subprocess
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


# --- provenance and the committed-file check ----------------------------------------------------


def test_a_value_records_the_last_writer_and_a_section_key_alone_records_nothing(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "gate:\n  absolute:\n    accuracy: {min: 0.9}\ntrain: {epochs: 2}\n")
    cfg = load_config(
        path,
        env={"TFSHIP_TRAIN_EPOCHS": "3", "GITLAB_USER_LOGIN": "dev"},
        overrides=["train.epochs=4", "gate.absolute.loss={max: 1}"],
    )
    src = cfg.sources
    assert src.of("train.epochs") == "--set train.epochs (local run by dev)"
    assert src.of("gate.run_mode") == "default"  # `gate:` is in the file, run_mode is not
    assert src.of("gate.absolute.accuracy.min").startswith(f"{path} (not in a git checkout")
    assert src.of("gate.absolute.loss.max") == "--set gate.absolute.loss (local run by dev)"
    # the field as a whole: the file's mapping plus the deeper --set
    assert src.of("gate.absolute").count(";") == 1
    assert "gate.run_mode" not in src.fields() and "train.epochs" in src.fields()


def test_the_resolved_config_carries_its_sources_as_comments_and_still_loads(
    tmp_path: Path,
) -> None:
    cfg = load_config(None, env={"TFSHIP_TRAIN_EPOCHS": "3"})
    dump_config(cfg, tmp_path / "config.resolved.yaml")
    text = (tmp_path / "config.resolved.yaml").read_text()
    assert "# train.epochs: environment variable TFSHIP_TRAIN_EPOCHS (local run by" in text
    assert load_config(tmp_path / "config.resolved.yaml", env={}) == cfg


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git binary")
@pytest.mark.parametrize(
    ("init", "index_version"),
    [([], "2"), ([], "3"), ([], "4"), (["--object-format=sha256"], "2")],
    ids=["index_v2", "index_v3", "index_v4", "sha256_repository"],
)
def test_the_index_reader_agrees_with_git_for_every_index_format(
    tmp_path: Path, init: list[str], index_version: str
) -> None:
    from tfship.config.committed import _from_git, _from_index

    def git(*args: str) -> str:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@x", *args],
            cwd=tmp_path, env=clean, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip

    try:
        git("init", "-q", *init)
    except subprocess.CalledProcessError:
        pytest.skip("this git cannot create the repository")
    names = [f"dir{i % 3}/sub/file-{i:03d}.yaml" for i in range(40)] + ["pipeline.yaml"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(f"n: {name}\n")
    git("add", "-A")
    git("commit", "-q", "-m", "x")
    git("update-index", "--index-version", index_version)
    if index_version == "3":  # extended flags appear with intent-to-add entries
        (tmp_path / "later.yaml").write_text("x: 1\n")
        git("add", "-N", "later.yaml")
    for name in [*names, "missing.yaml"]:
        assert _from_index(tmp_path, name) == _from_git(tmp_path, name), name


def test_tfship_config_sources_and_explain_show_where_values_came_from_and_their_roles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tfship import cli

    monkeypatch.setattr(cli, "COMMANDS", ("config",))
    monkeypatch.setenv("TFSHIP_GATE_RUN_MODE", "dry_run")
    path = write(tmp_path, "train: {epochs: 2}\n")
    assert cli.main(["config", "--config", str(path), "--sources", "--output", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)["config"]
    assert shown["fields"]["gate.run_mode"]["role"] == "verdict"
    assert "TFSHIP_GATE_RUN_MODE" in shown["fields"]["gate.run_mode"]["source"]
    assert shown["fields"]["train.epochs"] == {
        "source": f"{path} (not in a git checkout)",
        "role": "how",
    }
    assert cli.main(["config", "--explain", "--output", "json"]) == 0
    roles = json.loads(capsys.readouterr().out)["config"]["x-tfship-field-roles"]
    assert roles["serving.allow_ungated"]["role"] == "verdict"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("3", 3), ("[16, 16]", [16, 16]), ("a: b: c", "a: b: c"), ("\ufeffx", "x"), ("", None)],
)
def test_a_variable_value_is_yaml_and_text_that_is_not_yaml_stays_a_string(
    raw: str, expected: object
) -> None:
    from tfship.safe_yaml import parse_value

    assert parse_value(raw, "TFSHIP_X") == expected


@pytest.mark.parametrize(
    ("env", "sets", "enabled"),
    [
        ({"TFSHIP_BACKUP_URL": "s3://bucket/ckpt"}, [], True),  # the documented setup
        ({}, ["backup.url=/mnt/shared/ckpt"], True),
        ({"TFSHIP_BACKUP_URL": "s3://bucket/ckpt"}, ["backup.enabled=false"], False),
        ({}, [], False),
    ],
)
def test_a_backup_url_alone_turns_the_backup_on(
    env: dict[str, str], sets: list[str], enabled: bool
) -> None:
    assert load_config(None, env=env, overrides=sets).backup.enabled is enabled


@pytest.mark.parametrize("url", ["s3://bucket/ckpt", "gs://bucket/ckpt", "file:///mnt/x"])
def test_an_object_store_url_as_checkpoint_dir_is_refused_pointing_at_backup_url(url: str) -> None:
    with pytest.raises(ConfigError, match=r"checkpoint\.dir must be a local or mounted path") as e:
        load_config(None, env={"TFSHIP_CHECKPOINT_DIR": url})
    assert "backup.url" in str(e.value)
