"""A deploy target: one model repository plus, optionally, the TF Serving that reads it.

`Target.apply()` is the only place a new ModelServerConfig takes effect: with a server it is
pushed with HandleReloadConfigRequest, then the wanted versions are polled until AVAILABLE;
`models.config` in the repository is rewritten only after the server took it, so the file
always describes what is live (a restarted server comes back in the same state). With
`serving.replicas` (several servers that each poll their synced copy of the repository,
`tfship.serving.replicas`) the deploy is file-driven: writing `models.config` *is* the change
(counted in `reloads`: the servers may have it from then on), then every replica is polled
until it reports the wanted versions AVAILABLE and every label on its version. While a
deploy action holds the repository's lease, `apply()` checks the lease is still held and
records the state in the action's journal *before* the server sees it, so an undo (now, or by
the next action after a kill) knows every state this action may have applied.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfship.artifacts import MODELS_CONFIG
from tfship.config import PipelineConfig, trust
from tfship.config.committed import WORKSPACE_VARIABLES
from tfship.errors import ConfigError
from tfship.redact import redact_url
from tfship.serving import models_config
from tfship.serving.client import ServingClient
from tfship.serving.models_config import ModelState
from tfship.serving.replicas import Replicas
from tfship.serving.repository import ModelRepository, open_repository

log = logging.getLogger(__name__)
# The quick start's server: mounts ${MODEL_REPOSITORY:-../../models} (relative to the compose
# file, i.e. ./models from the project root) at /models and reads /models/models.config.
COMPOSE_FILE = Path("docker/serving") / "compose.yaml"
COMPOSE_MOUNT = "/models"


@dataclass
class Target:
    """Resolved from `serving` (+ `serving.environments[<to>]`)."""

    environment: str | None
    model: str
    repository: ModelRepository
    base_path: str
    client: ServingClient | None
    load_deadline: float
    poll: float
    reloads: int = 0  # configs the server took, or may have (an undo must reload then)
    writes: int = 0  # models.config rewrites in the repository (offline: the only change)
    lease: Any = None  # serving.lease.Lease while a deploy action holds the repository
    journal: Any = None  # serving.journal.Journal of the action in progress
    # serving.replicas: every server, file-driven; `client` is then this same object.
    replicas: Replicas | None = None

    @property
    def online(self) -> bool:
        return self.client is not None

    def per_server(self) -> list[Target]:
        """This target once per server (each replica's own client), for golden requests."""
        if self.replicas is None:
            return [self]
        return [dataclasses.replace(self, client=c, replicas=None) for c in self.replicas.clients()]

    def wait_live(self, state: ModelState, *, gone: tuple[int, ...] | list[int] = ()) -> None:
        """Every server reports `state`'s versions AVAILABLE (and `gone` ones gone); with
        replicas, every replica also resolves each of its labels to its version."""
        if self.replicas is not None:
            self.replicas.wait(
                state.versions,
                deadline=self.load_deadline,
                poll=self.poll,
                gone=gone,
                labels=state.labels,
            )
        elif self.client is not None:
            self.client.wait_available(
                state.versions, deadline=self.load_deadline, poll=self.poll, gone=gone
            )

    def read(self) -> tuple[Any, ModelState]:
        """The current models.config and this model's state in it (empty when absent)."""
        text = self.repository.read_text(MODELS_CONFIG)
        cfg = (
            models_config.parse(text, origin=f"{self.repository.url}/{MODELS_CONFIG}")
            if text and text.strip()
            else None
        )
        origin = f"{self.repository.url}/{MODELS_CONFIG}"
        state = models_config.model_state(cfg, self.model, origin=origin) if cfg else None
        if state is None:
            state = ModelState(self.model, self.base_path)
        elif state.base_path != self.base_path:
            log.warning(
                "models.config base_path %s differs from the configured %s; using the "
                "configured one",
                state.base_path,
                self.base_path,
            )
            state = ModelState(self.model, self.base_path, state.versions, state.labels)
        return cfg, state

    def apply(self, cfg: Any, state: ModelState, *, gone: tuple[int, ...] = ()) -> Any:
        """Make `state` live; returns the full ModelServerConfig that was applied."""
        new = models_config.with_model(cfg, state)
        if self.lease is not None:
            self.lease.check()
        if self.journal is not None:
            self.journal.note_applied(state)
        if self.replicas is not None:
            # File-driven: the replicas read models.config (synced copies, polled), so the write
            # is the change. Counted first: a failed write (an S3 timeout) may still have landed.
            # The replicas are resolved first: a name with no address changes nothing.
            self.replicas.urls()
            self.reloads += 1
            self.repository.write_text(MODELS_CONFIG, models_config.render(new))
            self.writes += 1
            self.wait_live(state, gone=gone)
            return new
        if self.client is not None:
            try:
                self.client.reload_config(new)
            except Exception as exc:
                if reached_server(exc):  # e.g. a timeout: the server may have applied it
                    self.reloads += 1
                raise
            self.reloads += 1  # the server now holds a config that may need undoing
            self.client.wait_available(
                state.versions, deadline=self.load_deadline, poll=self.poll, gone=gone
            )
        self.repository.write_text(MODELS_CONFIG, models_config.render(new))
        self.writes += 1
        return new

    def for_model(self, name: str) -> Target:
        """The same repository and server, another model (to undo an action on that model)."""
        if name == self.model:
            return self
        client: Any = None
        replicas = self.replicas.for_model(name) if self.replicas is not None else None
        if replicas is not None:
            client = replicas
        elif self.client is not None:
            c = self.client
            client = ServingClient(
                name,
                rest_url=c.rest_url,
                grpc_target=c.grpc_target,
                timeout=c.timeout,
                retries=c.retries,
                backoff=c.backoff,
            )
        base = f"{self.base_path.rsplit('/', 1)[0]}/{name}"
        return dataclasses.replace(
            self,
            model=name,
            base_path=base,
            client=client,
            replicas=replicas,
            journal=None,
            reloads=0,
            writes=0,
        )

    def describe(self) -> str:
        where = "offline"
        if self.replicas is not None:
            where = self.replicas.describe()
        elif self.client is not None:
            where = redact_url(self.client.rest_url)
        env = f"{self.environment}: " if self.environment else ""
        return f"{env}{self.repository.location(self.model)} -> {where}"


def reached_server(exc: BaseException) -> bool:
    """False only when a config reload surely never reached the server: it refused it
    (an error answer), or the connection failed (UNAVAILABLE: nothing was sent)."""
    from tfship.serving.client import ServerAnswered

    if isinstance(exc, ServerAnswered):
        return False
    cause = exc.__cause__
    code = getattr(cause, "code", None)
    if callable(code):
        with contextlib.suppress(Exception):
            return code().name != "UNAVAILABLE"
    return True


def offline_serve_hint(target: Target, project_root: Path | None = None) -> str:
    """The command that serves what an offline deploy wrote, with docker/serving/compose.yaml.

    compose.yaml mounts `./models` unless MODEL_REPOSITORY says otherwise, so the command names
    the repository when it is anywhere else; models.config must name base paths under /models.
    """
    from tfship.serving.repository_local import LocalRepository

    command = f"docker compose -f {COMPOSE_FILE} up"
    if not isinstance(target.repository, LocalRepository):
        return (
            f"copy {target.repository.url} to a local directory DIR, then "
            f"MODEL_REPOSITORY=DIR {command} (compose mounts a local directory at /models)"
        )
    root = (project_root or Path.cwd()).resolve()
    mounted = (root / COMPOSE_FILE).parent.joinpath("..", "..", "models").resolve()
    repo = target.repository.root.resolve()
    if repo != mounted:
        command = f"MODEL_REPOSITORY={shlex.quote(str(repo))} {command}"
    if not target.base_path.startswith(COMPOSE_MOUNT + "/"):
        command += (
            f" -- but models.config names base_path {target.base_path}, which compose does not "
            f"mount: unset serving.server_model_repository (default {COMPOSE_MOUNT}) and deploy "
            "again"
        )
    return command


def _check_model_name(name: str) -> None:
    """A model is the directory `<repo>/<name>/`: it must not take a name the repository needs."""
    why = None
    if name.lower() == MODELS_CONFIG.lower():
        why = f"it is the repository's {MODELS_CONFIG}, which every model on the server needs"
    elif len(name.encode()) > 255:
        why = "it is longer than a directory name may be (255 bytes)"
    if why:
        raise ConfigError(
            f"project.model_name '{name[:80]}' cannot be deployed: {why}",
            hint="choose another model name (letters, digits, '_', '-', '.')",
        )


def _refuse_throwaway_repository(to: str, repo_url: str) -> None:
    """In CI, a deploy with no server must publish somewhere that outlives the job.

    Without a REST URL a deploy only writes the model repository (a server that polls its
    models.config picks it up). A local repository inside the job's checkout is discarded with
    the job: the deploy would "succeed" and nothing would ever be served.
    """
    if "://" in repo_url or not trust.in_ci():
        return
    path = Path(repo_url).resolve()
    workspaces = [Path(w).resolve() for name in WORKSPACE_VARIABLES if (w := os.environ.get(name))]
    if not any(path.is_relative_to(w) for w in workspaces or [Path.cwd().resolve()]):
        return
    raise ConfigError(
        f"deploy --to {to} has no serving target in this CI job: serving.rest_url is not set and "
        f"the model repository {repo_url} lies inside the job's workspace, which is discarded "
        "when the job ends, so nothing would be served",
        hint=f"set TFSHIP_SERVING_REST_URL and TFSHIP_SERVING_GRPC_TARGET for the {to} "
        "environment (Settings > CI/CD > Variables, environment-scoped), and "
        "TFSHIP_SERVING_MODEL_REPOSITORY to the repository the server reads (s3://... or a "
        "shared path); see docs/ci.md",
    )


def resolve(cfg: PipelineConfig, to: str | None = None) -> Target:
    s = cfg.serving
    env = None
    if to is not None:
        if to not in s.environments:
            raise ConfigError(
                f"--to {to}: no such environment; expected one of {sorted(s.environments)}",
                hint="add it under serving.environments in pipeline.yaml",
            )
        env = s.environments[to]
    repo_url = (env and env.model_repository) or s.model_repository
    # The environment's own replicas or rest_url decide; without either, the section's.
    replicas = env.replicas if env and (env.replicas or env.rest_url) else s.replicas
    # Offline (quick start) the reader is docker/serving/compose.yaml, which mounts the
    # repository at /models; with a server, default to the path tfship itself writes to; with
    # replicas reading a remote repository, to /models (k8s: the sync sidecar's volume).
    offline_default = "/models" if not ((env and env.rest_url) or s.rest_url) else repo_url
    if replicas:
        offline_default = "/models" if "://" in repo_url else repo_url
    server_repo = (
        (env and env.server_model_repository) or s.server_model_repository or offline_default
    )
    rest_url = (env and env.rest_url) or s.rest_url
    grpc_target = (env and env.grpc_target) or s.grpc_target
    if replicas:
        if env and env.grpc_target:
            raise ConfigError(
                f"serving.environments.{to}.grpc_target is set but the deploy to {to} is "
                "file-driven (serving.replicas): tfship sends no HandleReloadConfigRequest",
                hint=f"unset serving.environments.{to}.grpc_target",
            )
        rest_url = grpc_target = None
    if grpc_target and not rest_url:
        raise ConfigError(
            "serving.grpc_target is set but serving.rest_url is not; tfship reads "
            "model status and sends golden requests over REST",
            hint="set serving.rest_url (TFSHIP_SERVING_REST_URL) too",
        )
    if rest_url and not grpc_target:
        raise ConfigError(
            f"serving.rest_url is {redact_url(rest_url)} but serving.grpc_target is not set; "
            "config reloads (HandleReloadConfigRequest) exist only in TF Serving's gRPC API",
            hint="set serving.grpc_target (TFSHIP_SERVING_GRPC_TARGET), e.g. host:8500",
        )
    _check_model_name(cfg.project.model_name)
    if to is not None and not rest_url and not replicas:
        _refuse_throwaway_repository(to, repo_url)
    repo = open_repository(repo_url, s3_endpoint_url=s.s3_endpoint_url)
    if "://" not in server_repo:
        from pathlib import Path

        # TF Serving resolves base_path on its own machine: make a local one absolute.
        server_repo = str(Path(server_repo).resolve()) if server_repo == repo_url else server_repo
    client: Any = None
    fleet = None
    if replicas:
        client = fleet = Replicas(
            cfg.project.model_name,
            replicas,
            timeout=s.request_timeout_seconds,
            retries=s.connect_retries,
            backoff=s.retry_backoff_seconds,
        )
    elif rest_url:
        client = ServingClient(
            cfg.project.model_name,
            rest_url=rest_url,
            grpc_target=grpc_target,
            timeout=s.request_timeout_seconds,
            retries=s.connect_retries,
            backoff=s.retry_backoff_seconds,
        )
    return Target(
        to,
        cfg.project.model_name,
        repo,
        f"{server_repo.rstrip('/')}/{cfg.project.model_name}",
        client,
        s.load_deadline_seconds,
        s.poll_interval_seconds,
        replicas=fleet,
    )
