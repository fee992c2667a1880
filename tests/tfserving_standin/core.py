"""The model manager: filesystem polling, version policy, loads, states and version labels.

Sources (tensorflow/serving), behaviour by behaviour:
* sources/storage_path/file_system_storage_path_source.cc: every ``file_system_poll_wait_seconds``
  each model's base path is listed; children whose names parse as int64 are versions (anything
  else, e.g. a temporary ``.tmp-3`` or ``3.partial`` directory, is ignored); the policy picks the
  aspired versions (latest N, default N=1; all; specific). A poll interval of 0 polls once, a
  negative one never. Nothing checks that a version directory is complete (issue #1086).
* core/availability_preserving_policy.cc (the model server's policy, main.cc/server.cc): a
  version that is no longer aspired is unloaded only once an aspired version is AVAILABLE (or
  while more than one unaspired version is still serving, oldest first); new aspired versions load
  highest first. So a version that fails to load leaves the old one serving (issue #1738).
* core/loader_harness.cc + aspired_versions_manager.cc: a load is retried
  ``--max_num_load_retries`` times, ``--load_retry_interval_micros`` apart, and retries stop if
  the version stops being aspired; a version whose load failed is not retried while it stays
  aspired (only when it disappears and reappears).
* core/servable_state.h + servable_state_monitor.cc + model_servers/get_model_status_impl.cc:
  states START, LOADING, AVAILABLE, UNLOADING, END; END carries the load error if any; the
  monitor keeps every version it has seen (unloaded ones stay listed as END), newest first;
  unknown model -> NOT_FOUND ``Could not find any versions of model <m>``; unknown version ->
  NOT_FOUND ``Could not find version <v> of model <m>``. A version *label* in the request is
  ignored by GetModelStatus (it only looks at ``model_spec.version``), so status by label
  returns every version, exactly as the real server does.
* model_servers/server_core.cc ``ServableRequestFromModelSpec`` / ``GetModelVersionForLabel`` and
  core/basic_manager.cc ``GetUntypedServableHandle``: no version -> the highest AVAILABLE one;
  missing -> NOT_FOUND ``Servable not found for request: Latest(<m>)`` / ``Specific(<m>, <v>)``;
  unknown label -> INVALID_ARGUMENT ``Unrecognized servable version label: <l>``.
* server_core.cc ``ReloadConfig`` / ``UpdateModelVersionLabelMap``: the label map is checked
  against the versions AVAILABLE *now* (before the new config loads anything); a label may point
  at a version that is not AVAILABLE only with ``--allow_version_labels_for_unavailable_models``
  and only if the label is new or keeps its version; otherwise FAILED_PRECONDITION ``Request to
  assign label to version <v> of model <m>, which is not currently available for inference`` and
  nothing changes. New models in a reload are waited for (``WaitUntilModelsAvailable``); new
  versions of existing models are not.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.tfserving_standin import model_config as mc
from tests.tfserving_standin.servable import Servable
from tests.tfserving_standin.status import (
    ServingError,
    failed_precondition,
    from_exception,
    invalid_argument,
    not_found,
)

log = logging.getLogger("tfserving_standin")

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"
MANAGE_INTERVAL = 0.05  # aspired_versions_manager's manage_state_interval_micros is 100 ms


@dataclass
class VersionStatus:
    state: str
    error: ServingError | None = None


@dataclass
class Harness:
    """One version the manager knows about (loader_harness.h)."""

    version: int
    path: Path
    state: str = START  # START, LOADING, AVAILABLE, UNLOADING, ERROR
    servable: Servable | None = None


class ServerCore:
    def __init__(
        self,
        *,
        poll_wait_seconds: int,
        max_num_load_retries: int,
        load_retry_interval_micros: int,
        allow_version_labels: bool,
        allow_version_labels_for_unavailable_models: bool,
        saved_model_tags: set[str],
        loader: Callable[..., Servable] = Servable,
    ):
        self.poll_wait_seconds = poll_wait_seconds
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval = load_retry_interval_micros / 1e6
        self.allow_version_labels = allow_version_labels
        self.allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self.tags = saved_model_tags
        self._loader = loader
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._config_mu = threading.Lock()  # ReloadConfig calls are serialised, as config_mu_
        self.config: mc.ModelServerConfig | None = None
        self._models: dict[str, mc.ModelConfig] = {}
        self._aspired: dict[str, dict[int, Path]] = {}
        self._harnesses: dict[str, dict[int, Harness]] = {}
        self._monitor: dict[str, dict[int, VersionStatus]] = {}
        self._labels: dict[str, dict[str, int]] | None = None
        self._threads: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        for target, name in ((self._poll_loop, "fs-poll"), (self._manage_loop, "manager")):
            thread = threading.Thread(target=target, name=f"standin-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- states ------------------------------------------------------------------------------
    def _publish(self, model: str, version: int, state: str, error: ServingError | None = None):
        with self._changed:
            self._monitor.setdefault(model, {})[version] = VersionStatus(state, error)
            self._changed.notify_all()
        if error is not None:
            log.error(
                "Servable {name: %s version: %d} %s: %s", model, version, state, error.message
            )
        else:
            log.info("Servable {name: %s version: %d} -> %s", model, version, state)

    def model_status(self, model: str, version: int | None) -> list[tuple[int, VersionStatus]]:
        with self._lock:
            versions = self._monitor.get(model, {})
            if version is not None:
                if version not in versions:
                    raise not_found(f"Could not find version {version} of model {model}")
                return [(version, versions[version])]
            if not versions:
                raise not_found(f"Could not find any versions of model {model}")
            return sorted(versions.items(), reverse=True)

    # -- servable lookup ---------------------------------------------------------------------
    def servable(self, model: str, version: int | None, label: str | None) -> Servable:
        if not model:
            raise invalid_argument("ModelSpec has no name specified.")
        if label is not None:
            if not self.allow_version_labels:
                raise invalid_argument(
                    "ModelSpec has 'version_label' set, but it is not currently allowed by the "
                    "server."
                )
            with self._lock:
                if self._labels is None:
                    raise ServingError("UNAVAILABLE", f"Model labels does not init yet.{label}")
                labelled = self._labels.get(model, {}).get(label)
            if labelled is None:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = labelled
        with self._lock:
            ready = {
                v: h.servable
                for v, h in self._harnesses.get(model, {}).items()
                if h.state in (AVAILABLE,) and h.servable is not None
            }
        if version is None:
            if not ready:
                raise not_found(f"Servable not found for request: Latest({model})")
            return ready[max(ready)]
        if version not in ready:
            raise not_found(f"Servable not found for request: Specific({model}, {version})")
        return ready[version]

    # -- config --------------------------------------------------------------------------------
    def reload_config(
        self, new: mc.ModelServerConfig, *, wait_timeout: float | None = None
    ) -> None:
        """ServerCore::ReloadConfig: validate, check labels, swap, poll; wait for new models."""
        with self._config_mu:
            with self._lock:
                mc.validate_transition(self.config, new)
                if new.WhichOneof("config") is None:
                    log.info("Taking no action for empty config.")
                    return
                labels = self._check_labels(new)
                old_names = set(self._models)
                self.config = new
                self._labels = labels
                self._models = {m.name: m for m in new.model_config_list.config}
                for gone in old_names - set(self._models):
                    self._aspired[gone] = {}
                    log.info("Model %s removed from the config; unloading it", gone)
            self.poll_once()
            new_models = set(self._models) - old_names
            self._wait_for_models(new_models, wait_timeout)

    def _check_labels(self, new: mc.ModelServerConfig) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}
        for model in new.model_config_list.config:
            states = self._monitor.get(model.name, {})
            for label, version in model.version_labels.items():
                allow_any = False
                if self.allow_unavailable_labels:
                    existing = (self._labels or {}).get(model.name, {}).get(label)
                    allow_any = existing is None or existing == version
                status = states.get(version)
                if not allow_any and (status is None or status.state != AVAILABLE):
                    raise failed_precondition(
                        f"Request to assign label to version {version} of model {model.name}, "
                        "which is not currently available for inference"
                    )
                result.setdefault(model.name, {})[label] = version
        if not self.allow_version_labels and result:
            raise failed_precondition(
                "Model version labels are not currently allowed by the server."
            )
        return result

    def _wait_for_models(self, models: set[str], timeout: float | None) -> None:
        """Wait until each model's latest aspired version is AVAILABLE or has failed (END)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        failed = []
        with self._changed:
            for model in sorted(models):
                aspired = self._aspired.get(model, {})
                if not aspired:
                    continue  # nothing on disk yet: the real server logs and keeps polling
                latest = max(aspired)
                while True:
                    status = self._monitor.get(model, {}).get(latest)
                    if status is not None and status.state in (AVAILABLE, END):
                        break
                    if self._stop.is_set():
                        return
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise ServingError(
                            "DEADLINE_EXCEEDED", f"Timed out waiting for model {model} to load"
                        )
                    self._changed.wait(timeout=0.2 if remaining is None else min(0.2, remaining))
                if status.state != AVAILABLE:
                    failed.append(f"{{name: {model} version: {latest}}}")
        if failed:
            raise ServingError(
                "UNKNOWN", "Some models did not become available: {" + ", ".join(failed) + ", }"
            )

    # -- filesystem polling (FileSystemStoragePathSource) --------------------------------------
    def poll_once(self) -> None:
        with self._lock:
            models = dict(self._models)
        found: dict[str, dict[int, Path]] = {}
        for name, model in models.items():
            base = Path(model.base_path)
            on_disk: dict[int, Path] = {}
            try:
                children = list(base.iterdir())
            except OSError:
                log.warning(
                    "File system polling: base path %s for servable %s does not exist", base, name
                )
                children = []
            for child in children:
                version = _parse_version(child.name)
                if version is not None and child.is_dir():
                    on_disk[version] = child
            if not on_disk:
                log.warning("No versions of servable %s found under base path %s", name, base)
            chosen = mc.aspired_versions(model, sorted(on_disk))
            found[name] = {v: on_disk[v] for v in chosen}
        with self._changed:
            for name, versions in found.items():
                if name in self._models:  # a reload may have removed it meanwhile
                    self._aspired[name] = versions
            self._changed.notify_all()

    def _poll_loop(self) -> None:
        if self.poll_wait_seconds < 0:
            return
        while not self._stop.wait(max(self.poll_wait_seconds, 0.05)):
            if self.poll_wait_seconds == 0:
                return  # polled once, by reload_config
            self.poll_once()

    # -- manager (AspiredVersionsManager + AvailabilityPreservingPolicy) ---------------------
    def _manage_loop(self) -> None:
        while not self._stop.is_set():
            action = self._next_action()
            if action is None:
                with self._changed:
                    self._changed.wait(MANAGE_INTERVAL)
                continue
            kind, model, harness = action
            if kind == "load":
                self._load(model, harness)
            else:
                self._unload(model, harness)

    def _next_action(self):
        with self._lock:
            for model in sorted(self._aspired):
                aspired = self._aspired[model]
                harnesses = self._harnesses.setdefault(model, {})
                # Forget failed versions that are no longer aspired, so a reappearance reloads.
                for version in [v for v, h in harnesses.items() if h.state == "ERROR"]:
                    if version not in aspired:
                        del harnesses[version]
                for version, path in aspired.items():
                    if version not in harnesses:
                        harnesses[version] = Harness(version, path)
                        self._publish(model, version, START)
                serving_unaspired = sorted(
                    v for v, h in harnesses.items() if h.state == AVAILABLE and v not in aspired
                )
                aspired_serving = any(
                    h.state == AVAILABLE and v in aspired for v, h in harnesses.items()
                )
                removed = model not in self._models
                if serving_unaspired and (aspired_serving or len(serving_unaspired) > 1 or removed):
                    return "unload", model, harnesses[serving_unaspired[0]]
                for version in sorted(aspired, reverse=True):
                    if harnesses[version].state == START:
                        return "load", model, harnesses[version]
                # START harnesses whose version stopped being aspired before loading: drop them.
                for version in [v for v, h in harnesses.items() if h.state == START]:
                    if version not in aspired:
                        del harnesses[version]
                        self._publish(model, version, END)
        return None

    def _still_aspired(self, model: str, version: int) -> bool:
        with self._lock:
            return version in self._aspired.get(model, {}) and model in self._models

    def _load(self, model: str, harness: Harness) -> None:
        with self._lock:
            harness.state = LOADING
        self._publish(model, harness.version, LOADING)
        attempts = self.max_num_load_retries + 1
        error: ServingError | None = None
        for attempt in range(attempts):
            if attempt:
                if self._stop.wait(self.load_retry_interval) or not self._still_aspired(
                    model, harness.version
                ):
                    break  # cancel_load_retries: the version is no longer wanted
                log.info(
                    "Retrying load of {name: %s version: %d} (attempt %d of %d)",
                    model,
                    harness.version,
                    attempt + 1,
                    attempts,
                )
            try:
                servable = self._loader(model, harness.version, harness.path, self.tags)
            except Exception as exc:  # every failure becomes the version's status
                error = from_exception(exc)
                log.error(
                    "Loading servable {name: %s version: %d} failed: %s",
                    model,
                    harness.version,
                    error.message,
                )
                continue
            with self._lock:
                harness.servable = servable
                harness.state = AVAILABLE
            self._publish(model, harness.version, AVAILABLE)
            return
        with self._lock:
            harness.state = "ERROR"
        self._publish(
            model, harness.version, END, error or ServingError("CANCELLED", "Load cancelled")
        )

    def _unload(self, model: str, harness: Harness) -> None:
        with self._lock:
            harness.state = UNLOADING
            self._publish(model, harness.version, UNLOADING)
            # Drop it from the serving map first; requests holding a reference finish normally.
            servable, harness.servable = harness.servable, None
            del self._harnesses[model][harness.version]
        del servable
        self._publish(model, harness.version, END)


def _parse_version(name: str) -> int | None:
    # file_system_storage_path_source.cc ParseVersionNumber: strings::safe_strto64, which
    # accepts an optional sign and surrounding whitespace; versions are non-negative.
    try:
        value = int(name.strip(), 10)
    except ValueError:
        return None
    if value < 0 or not name.strip().lstrip("+").isdigit() or value >= 2**63:
        return None
    return value
