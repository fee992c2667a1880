"""models.config is TF Serving's ModelServerConfig text proto, built with the real protos."""

from __future__ import annotations

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tfship.errors import ConfigError
from tfship.serving import models_config
from tfship.serving.models_config import ModelState

OTHER = """
model_config_list {
  config { name: "other" base_path: "/models/other" model_platform: "tensorflow" }
}
"""


def test_state_round_trips_through_the_text_proto() -> None:
    state = ModelState("digits", "/models/digits", (3, 1, 2), {"stable": 2, "canary": 3})
    text = models_config.render(models_config.with_model(None, state))
    assert "specific" in text and 'key: "canary"' in text
    parsed = models_config.model_state(models_config.parse(text), "digits")
    assert parsed == ModelState("digits", "/models/digits", (1, 2, 3), {"canary": 3, "stable": 2})


def test_rendered_text_is_what_tensorflow_serving_parses() -> None:
    state = ModelState("digits", "/m/digits", (1,), {"stable": 1})
    text = models_config.render(models_config.with_model(None, state))
    real = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    entry = real.model_config_list.config[0]
    assert entry.model_platform == "tensorflow"
    assert list(entry.model_version_policy.specific.versions) == [1]
    assert dict(entry.version_labels) == {"stable": 1}


def test_other_models_in_the_same_file_are_kept() -> None:
    cfg = models_config.parse(OTHER)
    out = models_config.with_model(cfg, ModelState("digits", "/models/digits", (1,)))
    assert [c.name for c in out.model_config_list.config] == ["other", "digits"]
    assert models_config.model_state(cfg, "digits") is None


def test_replacing_a_model_drops_its_old_versions_and_labels() -> None:
    cfg = models_config.with_model(None, ModelState("d", "/b/d", (1, 2), {"stable": 1}))
    cfg = models_config.with_model(cfg, ModelState("d", "/b/d", (2,), {"canary": 2}))
    assert models_config.model_state(cfg, "d") == ModelState("d", "/b/d", (2,), {"canary": 2})


def test_an_empty_version_list_is_still_a_specific_policy() -> None:
    text = models_config.render(models_config.with_model(None, ModelState("d", "/b/d")))
    assert "specific" in text
    assert models_config.model_state(models_config.parse(text), "d") == ModelState("d", "/b/d")


def test_a_label_must_point_at_a_configured_version() -> None:
    with pytest.raises(ValueError, match="only routes a label"):
        ModelState("d", "/b/d", (1,), {"stable": 2})


def test_a_latest_policy_is_refused_because_tfship_pins_versions() -> None:
    cfg = models_config.parse(
        'model_config_list { config { name: "d" base_path: "/b/d" '
        "model_version_policy { latest { num_versions: 1 } } } }"
    )
    with pytest.raises(ConfigError, match="specific"):
        models_config.model_state(cfg, "d")


def test_a_malformed_file_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"models\.config is not a valid"):
        models_config.parse("model_config_list { nonsense }")


# A models.config edited by hand: what TF Serving would refuse is a ConfigError naming the file
# (exit 3), never a crash (before: ValueError, exit 1).
BROKEN_ENTRIES = [
    (
        "a label on a version it does not load",
        'config { name: "d" base_path: "/b/d" model_version_policy { specific { versions: 1 } } '
        'version_labels { key: "stable" value: 2 } }',
        "only routes a label",
    ),
    (
        "a negative version",
        'config { name: "d" base_path: "/b/d" model_version_policy { specific { versions: -5 } } }',
        "negative version",
    ),
    (
        "two entries of the same model",
        'config { name: "d" base_path: "/b/d" } config { name: "d" base_path: "/c/d" }',
        "2 entries named 'd'",
    ),
]


@pytest.mark.parametrize(
    ("what", "entries", "message"), BROKEN_ENTRIES, ids=[w for w, _, _ in BROKEN_ENTRIES]
)
def test_an_entry_tf_serving_would_refuse_is_a_config_error_naming_the_file(
    what: str, entries: str, message: str
) -> None:
    cfg = models_config.parse(f"model_config_list {{ {entries} }}")
    with pytest.raises(ConfigError, match=message) as err:
        models_config.model_state(cfg, "d", origin="/repo/models.config")
    assert "/repo/models.config" in str(err.value)


def test_removing_a_model_keeps_the_others_in_order() -> None:
    cfg = models_config.parse(OTHER)
    cfg = models_config.with_model(cfg, ModelState("d", "/b/d", (1,), {"stable": 1}))
    out = models_config.without_model(cfg, "d")
    assert [c.name for c in out.model_config_list.config] == ["other"]
    assert models_config.without_model(None, "d").HasField("model_config_list")
