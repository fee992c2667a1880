from __future__ import annotations

import json

import pytest

from tfship.cluster import cluster_size, is_chief, tf_config
from tfship.config import TrainConfig
from tfship.distribute import make_strategy, strategy_name
from tfship.errors import ConfigError

TWO_WORKERS = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}


@pytest.mark.parametrize(
    ("config", "chief"),
    [
        ({}, True),
        ({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 1}}, False),
        (
            {"cluster": {"chief": ["h:1"], **TWO_WORKERS}, "task": {"type": "worker", "index": 0}},
            False,
        ),
        (
            {"cluster": {"chief": ["h:1"], **TWO_WORKERS}, "task": {"type": "chief", "index": 0}},
            True,
        ),
    ],
)
def test_is_chief_follows_tensorflows_multi_worker_convention(config, chief):
    assert is_chief(config) is chief


def test_cluster_size_counts_chief_and_workers_but_not_evaluators():
    cfg = {"cluster": {"chief": ["h:1"], "worker": ["h:2", "h:3"], "evaluator": ["h:4"]}}
    assert cluster_size(cfg) == 3
    assert cluster_size({}) == 0


def test_tf_config_that_is_not_json_is_a_config_error(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{cluster: nope")
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid JSON"):
        tf_config()


def test_auto_strategy_on_one_cpu_is_the_default_strategy(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = make_strategy(TrainConfig())
    assert strategy_name(strategy) == "default"
    assert strategy.num_replicas_in_sync == 1


def test_forced_mirrored_with_one_device_is_a_config_error_with_a_fix(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError) as err:
        make_strategy(TrainConfig(strategy="mirrored"))
    assert "train.strategy=mirrored" in str(err.value)
    assert "train.cpu_logical_devices=2" in str(err.value)


def test_forced_multi_worker_without_a_cluster_is_a_config_error(monkeypatch):
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"worker": ["h:1"]}, "task": {"type": "worker"}})
    )
    with pytest.raises(ConfigError, match="TF_CONFIG lists 1 training task"):
        make_strategy(TrainConfig(strategy="multi_worker"))
