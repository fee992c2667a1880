"""The journal of the deploy action in progress, and the undo that reads it.

`<repo>/.tfship/journal.json` (schema `serving-journal.schema.json`) is written by the lease
holder before it changes anything: the model's `models.config` entry before the action, every
entry the action is about to apply (recorded before the server sees it) and the version it
publishes (and whether that version existed before). So:

* `undo()` touches only what its own action changed: the model's own entry, and only while it
  still is one this action wrote; the version only when this action published it. It puts the
  files back first (what a restarted server reads), then reloads the server, and says exactly
  which part did not succeed;
* `tfship status` shows an unfinished action;
* `recover()`, run by the next action once it holds the lease, finishes what a killed or failed
  one left: an action whose `ok` record is in the deploy log is done (journal dropped),
  anything else is undone; temporary copies are removed either way.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from tfship.artifacts import MODELS_CONFIG
from tfship.errors import RestoreFailed
from tfship.redact import redact, redact_text
from tfship.serving import models_config, schema
from tfship.serving.deploy_log import log_record
from tfship.serving.models_config import ModelState
from tfship.serving.repository import META_DIR

log = logging.getLogger(__name__)
JOURNAL = f"{META_DIR}/journal.json"


def entry_of(state: ModelState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {
        "base_path": state.base_path,
        "versions": list(state.versions),
        "labels": dict(state.labels),
    }


def state_of(name: str, entry: dict[str, Any]) -> ModelState:
    return ModelState(name, entry["base_path"], tuple(entry["versions"]), entry["labels"])


class Journal:
    """The in-progress action's journal; every change is written before it is made."""

    def __init__(self, repo: Any, doc: dict[str, Any]) -> None:
        self.repo, self.doc = repo, doc

    @classmethod
    def start(
        cls,
        repo: Any,
        *,
        op: str,
        action: str,
        model: str,
        version: int | None,
        before: ModelState | None,
    ) -> Journal:
        doc = {
            "format": "tfship-journal/1",
            "id": op,
            "action": action,
            "model": model,
            "version": version,
            "state": "running",
            "before": entry_of(before),
            "applied": [],
            "publish": None,
            "restore_error": None,
        }
        journal = cls(repo, doc)
        journal._write()
        return journal

    def _write(self) -> None:
        self.repo.write_text(JOURNAL, json.dumps(redact(self.doc), indent=1) + "\n")

    def note_applied(self, state: ModelState) -> None:
        entry = entry_of(state)
        if entry not in self.doc["applied"]:
            self.doc["applied"].append(entry)
            self._write()

    def note_publish(self, version: int, existed: bool) -> None:
        self.doc["publish"] = {"version": version, "existed": existed}
        self._write()

    def failed(self, error: str) -> None:
        self.doc.update(state="restore_failed", restore_error=redact_text(error)[:2000])
        self._write()

    def clear(self) -> None:
        self.repo.delete_text(JOURNAL)


def read(repo: Any) -> tuple[dict[str, Any] | None, list[str]]:
    text = repo.read_text(JOURNAL)
    if text is None:
        return None, []
    return schema.loads("journal", text)


@dataclass(frozen=True)
class Undo:
    """What an undo put back, and what it could not."""

    steps: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        done = "; ".join(self.steps) or "nothing needed undoing"
        if self.complete:
            return done
        return f"NOT RESTORED: {'; '.join(self.problems)} (done: {done})"


def undo(target: Any, doc: dict[str, Any], *, server_touched: bool) -> Undo:
    """Put back what the journal's action changed, files first, then the server."""
    model, repo = doc["model"], target.repository
    before = state_of(model, doc["before"]) if doc["before"] else None
    steps: list[str] = []
    problems: list[str] = []
    new_cfg = None
    # 1. models.config: only this model's entry, and only if this action wrote what is there.
    try:
        text = repo.read_text(MODELS_CONFIG)
        cfg = models_config.parse(text, origin=MODELS_CONFIG) if text and text.strip() else None
        now = entry_of(models_config.model_state(cfg, model)) if cfg is not None else None
        if now != doc["before"] and now not in doc["applied"]:
            problems.append(
                f"{MODELS_CONFIG} holds {now} for {model}, which this action never wrote: "
                "left as it is"
            )
        else:
            new_cfg = (
                models_config.with_model(cfg, before)
                if before is not None
                else models_config.without_model(cfg, model)
            )
            if now != doc["before"]:
                repo.write_text(MODELS_CONFIG, models_config.render(new_cfg))
                steps.append(
                    f"{MODELS_CONFIG} entry back to versions {list(before.versions)}, labels "
                    f"{dict(before.labels)}"
                    if before is not None
                    else f"{MODELS_CONFIG} entry of {model} removed (it had none before)"
                )
    except Exception as exc:
        problems.append(f"{MODELS_CONFIG} not put back ({type(exc).__name__}: {exc})")
    # 2. The server: the restored config, and the previous versions AVAILABLE again. With
    # replicas (file-driven) the file written above is the restore: wait for every replica.
    replicas = getattr(target, "replicas", None)
    if replicas is not None and server_touched and new_cfg is not None:
        gone = [doc["publish"]["version"]] if doc["publish"] else []
        wanted = list(before.versions) if before is not None else []
        try:
            replicas.wait(
                wanted,
                deadline=target.load_deadline,
                poll=target.poll,
                gone=[v for v in gone if v not in wanted],
                labels=dict(before.labels) if before is not None else {},
            )
            steps.append(f"every replica serves versions {wanted} again")
        except Exception as exc:
            problems.append(
                f"not every replica took the restored {MODELS_CONFIG} ({type(exc).__name__}: "
                f"{getattr(exc, 'message', exc)})"
            )
    elif target.client is not None and server_touched and new_cfg is not None:
        try:
            target.client.reload_config(new_cfg)
            gone = [doc["publish"]["version"]] if doc["publish"] else []
            wanted = list(before.versions) if before is not None else []
            target.client.wait_available(
                wanted,
                deadline=target.load_deadline,
                poll=target.poll,
                gone=[v for v in gone if v not in wanted],
            )
            steps.append(f"server reloaded, versions {wanted} AVAILABLE")
        except Exception as exc:
            problems.append(
                f"the server did not take the restored config ({type(exc).__name__}: "
                f"{getattr(exc, 'message', exc)}); it loads {MODELS_CONFIG} again on restart"
            )
    # 3. The version, only if this action published it (never one that existed before).
    pub = doc["publish"]
    if pub and not pub["existed"] and (before is None or pub["version"] not in before.versions):
        try:
            if repo.is_complete(model, pub["version"]) or pub["version"] in repo.versions(model):
                repo.delete_version(model, pub["version"])
                steps.append(f"version {pub['version']} un-published")
        except Exception as exc:
            problems.append(f"version {pub['version']} not un-published ({exc})")
    try:
        repo.discard_leftovers(model)
    except Exception as exc:  # TF Serving ignores them; the next action retries
        log.warning("temporary copies under %s not removed: %s", repo.location(model), exc)
    return Undo(steps, [redact_text(p) for p in problems])


def recover(target: Any) -> list[str]:
    """Finish what an earlier action left (the caller holds the lease); notes on what was done.

    RestoreFailed (exit 13) when its undo cannot be completed now: nothing else may change
    until it is, because the files and the server may not match the deploy log.
    """
    repo = target.repository
    doc, bad = read(repo)
    notes: list[str] = []
    if bad:
        raise RestoreFailed(
            f"{repo.url}/{JOURNAL} is damaged ({'; '.join(bad)}); tfship cannot tell what the "
            "unfinished action changed",
            hint=f"compare {MODELS_CONFIG} with `tfship status`, fix it by hand, then delete "
            f"{JOURNAL}",
        )
    if doc is not None:
        other = target.for_model(doc["model"])
        records = repo.read_log(doc["model"])
        if any(r.get("id") == doc["id"] and r["status"] == "ok" for r in records):
            notes.append(f"{doc['action']} {doc['id']} had finished before it was interrupted")
        else:
            outcome = undo(other, doc, server_touched=True)
            what = f"unfinished {doc['action']} of {doc['model']} v{doc['version']} ({doc['id']})"
            status = "failed" if outcome.complete else "restore_failed"
            repo.append_log(
                doc["model"],
                log_record(
                    doc["action"],
                    doc["model"],
                    id=doc["id"],
                    environment=target.environment,
                    status=status,
                    version=doc["version"],
                    why="interrupted; undone by the next deploy action",
                    labels_after=(doc["before"] or {}).get("labels", {}),
                    restore=outcome.describe(),
                ),
            )
            if not outcome.complete:
                Journal(repo, doc).failed(outcome.describe())
                raise RestoreFailed(
                    f"the {what} could not be undone: {outcome.describe()}; nothing else was "
                    "changed",
                    hint="bring the server / object store back and run the action again: it "
                    "finishes the undo first",
                )
            notes.append(f"undid the {what}: {outcome.describe()}")
        repo.delete_text(JOURNAL)
    for model in {target.model} | ({doc["model"]} if doc else set()):
        removed = repo.discard_leftovers(model)
        if removed:
            notes.append(f"removed temporary copies under {repo.location(model)}: {removed}")
    for note in notes:
        log.warning("%s", note)
    return notes
