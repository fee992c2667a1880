"""A stand-in for GitHub's runner (NOT GitHub Actions, NOT act): runs a workflow's jobs' `run:`
steps in order, on this machine, with the environment GitHub would give them.

What it does like GitHub: follows `uses: ./.github/workflows/<reusable>.yml` with its `with:`
inputs (and their defaults), orders jobs by `needs`, evaluates each job's and step's `if:`,
expands `${{ }}` in `with:`, `env:` and `run:` (contexts: github, inputs, vars, secrets, env,
needs, steps; functions: format, contains, startsWith, fromJSON, always, success, failure,
cancelled), merges workflow/job/step `env:`, sets GitHub's default variables (CI,
GITHUB_ACTIONS, GITHUB_WORKSPACE, GITHUB_EVENT_NAME/PATH, GITHUB_REF, GITHUB_SHA, GITHUB_RUN_ID,
GITHUB_JOB, GITHUB_STEP_SUMMARY, GITHUB_OUTPUT, GITHUB_ENV, RUNNER_TEMP, ...) and runs each
`run:` with GitHub's bash (`bash --noprofile --norc -eo pipefail`), reading GITHUB_OUTPUT and
GITHUB_ENV back after each step.

What it replaces (third-party actions cannot be fetched here), each by the smallest honest
equivalent: actions/checkout -> a copy of the repository's committed files into a fresh
workspace per job; actions/setup-python -> the Python already on PATH; upload-artifact /
download-artifact -> a folder shared by the run. Any other `uses:` raises NotRunnable: the
harness never pretends a step ran. Jobs run one after another, never in parallel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
IDENT = re.compile(r"(?<![\w'])([A-Za-z_][\w-]*(?:\.[\w*-]+)*)(?![\w'(])")
FUNCS = {"format", "contains", "startsWith", "endsWith", "fromJSON", "toJSON", "always"}
AMBIENT = ("GITHUB_", "CI_", "TFSHIP_", "GITLAB_", "AWS_")  # never leak into a job
FUNCS |= {"success", "failure", "cancelled", "true", "false", "null"}


class NotRunnable(RuntimeError):
    """A step this stand-in cannot run (an action it does not replace)."""


@dataclass
class JobResult:
    name: str
    status: str  # success | failure | skipped
    steps: list[tuple[str, int]] = field(default_factory=list)  # (step, exit code)
    outputs: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    log: str = ""


def _lookup(ctx: dict[str, Any], dotted: str) -> Any:
    value: Any = ctx
    for part in dotted.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    return value


def evaluate(expr: str, ctx: dict[str, Any], status: str = "success") -> Any:
    """One GitHub expression (without `${{ }}`) translated to Python and evaluated."""
    strings: list[str] = []

    def keep(m: re.Match[str]) -> str:
        strings.append(m.group(0)[1:-1].replace("''", "'"))
        return f"__s{len(strings) - 1}"

    text = re.sub(r"'(?:[^']|'')*'", keep, expr)
    text = text.replace("&&", " and ").replace("||", " or ")
    text = re.sub(r"!(?!=)", " not ", text)

    def ident(m: re.Match[str]) -> str:
        name = m.group(1)
        if name.startswith("__s") or name in FUNCS or name in ("and", "or", "not"):
            return name
        return f"_get({name!r})"

    text = IDENT.sub(ident, text)
    env = {
        "_get": lambda d: _lookup(ctx, d),
        "true": True,
        "false": False,
        "null": None,
        "format": lambda f, *a: re.sub(r"\{(\d+)\}", lambda m: str(a[int(m.group(1))]), f),
        "contains": lambda h, n: (n in h) if h is not None else False,
        "startsWith": lambda s, p: str(s or "").lower().startswith(str(p).lower()),
        "endsWith": lambda s, p: str(s or "").lower().endswith(str(p).lower()),
        "fromJSON": json.loads,
        "toJSON": json.dumps,
        "always": lambda: True,
        "success": lambda: status == "success",
        "failure": lambda: status == "failure",
        "cancelled": lambda: False,
        **{f"__s{i}": s for i, s in enumerate(strings)},
    }
    return eval(text, {"__builtins__": {}}, env)


def _str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def expand(value: Any, ctx: dict[str, Any]) -> Any:
    if isinstance(value, str):
        whole = EXPR.fullmatch(value.strip())
        if whole:  # a lone expression keeps its type (booleans for inputs)
            return evaluate(whole.group(1), ctx)
        return EXPR.sub(lambda m: _str(evaluate(m.group(1), ctx)), value)
    if isinstance(value, dict):
        return {k: expand(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, ctx) for v in value]
    return value


def _strs(mapping: dict, ctx: dict[str, Any]) -> dict[str, str]:
    return {k: _str(v) for k, v in expand(mapping or {}, ctx).items()}


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def _condition(job_or_step: dict, ctx: dict[str, Any], status: str) -> bool:
    cond = job_or_step.get("if")
    if cond is None:
        return status == "success"
    text = cond if isinstance(cond, str) else _str(cond)
    whole = EXPR.fullmatch(text.strip())
    return bool(evaluate(whole.group(1) if whole else text, ctx, status))


def _ordered(jobs: dict[str, dict]) -> list[str]:
    done: list[str] = []
    while len(done) < len(jobs):
        ready = [n for n, j in jobs.items() if n not in done and all(d in done for d in _needs(j))]
        if not ready:
            raise ValueError(f"cyclic needs among {sorted(set(jobs) - set(done))}")
        done.extend(ready)
    return done


def _needs(job: dict) -> list[str]:
    needs = job.get("needs") or []
    return [needs] if isinstance(needs, str) else list(needs)


@dataclass
class Runner:
    """One workflow run: the repository, the event and what GitHub would pass it."""

    repo: Path
    event_name: str
    event: dict[str, Any]
    ref: str
    variables: dict[str, str] = field(default_factory=dict)  # vars.*
    secrets: dict[str, str] = field(default_factory=dict)
    runner_env: dict[str, str] = field(default_factory=dict)  # a self-hosted runner's .env
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gh-standin-")))
    run_id: str = "4200"
    results: dict[str, JobResult] = field(default_factory=dict)

    def github(self, job: str) -> dict[str, Any]:
        return {
            "event_name": self.event_name,
            "event": self.event,
            "ref": self.ref,
            "ref_name": self.ref.rsplit("/", 1)[-1],
            "ref_protected": False,
            "repository": "team/shapes",
            "repository_owner": "team",
            "run_id": self.run_id,
            "run_attempt": "1",
            "sha": self._head(),
            "actor": "team-dev",
            "job": job,
            "token": self.secrets.get("GITHUB_TOKEN", ""),
            "workspace": str(self.root / "work" / job),
            "server_url": "https://github.com",
            "api_url": self.variables.get("_API_URL", "https://api.github.com"),
        }

    def _head(self) -> str:
        out = subprocess.run(
            ["git", "-C", str(self.repo), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip()

    def run_workflow(self, path: Path, inputs: dict[str, Any] | None = None, prefix: str = ""):
        workflow = yaml.safe_load(path.read_text())
        spec = ((workflow.get(True) or workflow.get("on") or {}) or {}).get("workflow_call") or {}
        defaults = {k: v.get("default") for k, v in (spec.get("inputs") or {}).items()}
        inputs = {**defaults, **(inputs or {})}
        jobs = workflow.get("jobs") or {}
        for name in _ordered(jobs):
            job, full = jobs[name], f"{prefix}{name}"
            needs = {n: self._needs_ctx(f"{prefix}{n}") for n in _needs(job)}
            ctx = self._ctx(full, inputs, needs, {}, {})
            upstream_ok = all(self.results[f"{prefix}{n}"].status == "success" for n in needs)
            if not _condition(job, ctx, "success" if upstream_ok else "failure"):
                self.results[full] = JobResult(full, "skipped")
                continue
            if str(job.get("uses", "")).startswith("./"):
                self.run_workflow(
                    self.repo / job["uses"], expand(job.get("with") or {}, ctx), prefix=f"{full}/"
                )
                inner = [r for k, r in self.results.items() if k.startswith(f"{full}/")]
                ok = all(r.status != "failure" for r in inner)
                self.results[full] = JobResult(full, "success" if ok else "failure")
                continue
            self.results[full] = self._run_job(full, job, workflow.get("env") or {}, ctx)
        return self.results

    def _needs_ctx(self, name: str) -> dict[str, Any]:
        r = self.results.get(name)
        return {"result": r.status if r else "skipped", "outputs": r.outputs if r else {}}

    def _ctx(self, job, inputs, needs, env, steps) -> dict[str, Any]:
        return {
            "github": self.github(job.rsplit("/", 1)[-1]),
            "inputs": inputs,
            "vars": self.variables,
            "secrets": self.secrets,
            "needs": needs,
            "env": env,
            "steps": steps,
            "runner": {"os": "Linux", "temp": str(self.root / "tmp")},
        }

    def _run_job(self, name: str, job: dict, wf_env: dict, ctx: dict) -> JobResult:
        result = JobResult(name, "success")
        work = self.root / "work" / name.replace("/", "__")
        files = self.root / "files" / name.replace("/", "__")
        files.mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        event_path = files / "event.json"
        event_path.write_text(json.dumps(self.event))
        summary, output_file, env_file = files / "summary.md", files / "output", files / "env"
        env: dict[str, str] = {k: _str(v) for k, v in expand(wf_env, ctx).items()}
        env.update(
            {k: _str(v) for k, v in expand(job.get("env") or {}, {**ctx, "env": env}).items()}
        )
        steps: dict[str, Any] = {}
        status = "success"
        for i, step in enumerate(job.get("steps") or []):
            sctx = {**ctx, "env": env, "steps": steps}
            label = step.get("name") or step.get("run") or step.get("uses") or f"step {i}"
            if not _condition(step, sctx, status):
                continue
            step_env = {
                **env,
                **{k: _str(v) for k, v in expand(step.get("env") or {}, sctx).items()},
            }
            for f in (output_file, env_file):
                f.write_text("")
            base = {
                **{k: v for k, v in os.environ.items() if not k.startswith(AMBIENT)},
                **self.runner_env,
                "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(work),
                "GITHUB_EVENT_NAME": self.event_name, "GITHUB_EVENT_PATH": str(event_path),
                "GITHUB_REF": self.ref, "GITHUB_REF_NAME": ctx["github"]["ref_name"],
                "GITHUB_SHA": ctx["github"]["sha"], "GITHUB_REPOSITORY": "team/shapes",
                "GITHUB_RUN_ID": self.run_id, "GITHUB_RUN_ATTEMPT": "1",
                "GITHUB_JOB": name.rsplit("/", 1)[-1], "GITHUB_ACTOR": "team-dev",
                "GITHUB_SERVER_URL": "https://github.com",
                "GITHUB_API_URL": ctx["github"]["api_url"],
                "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(output_file),
                "GITHUB_ENV": str(env_file), "RUNNER_TEMP": str(self.root / "tmp"),
                "RUNNER_OS": "Linux",
            }  # fmt: skip
            code, log = self._step(step, sctx, work, {**base, **step_env})
            result.log += f"\n--- {label}\n{log}"
            result.steps.append((str(label), code))
            outputs = dict(re.findall(r"^([\w-]+)=(.*)$", output_file.read_text(), re.M))
            env.update(dict(re.findall(r"^([\w-]+)=(.*)$", env_file.read_text(), re.M)))
            if step.get("id"):
                steps[step["id"]] = {
                    "outputs": outputs,
                    "outcome": "success" if code == 0 else "failure",
                }
            if code != 0 and not step.get("continue-on-error"):
                status = "failure"
        result.status = status
        result.outputs = {
            k: _str(v) for k, v in expand(job.get("outputs") or {}, {**ctx, "steps": steps}).items()
        }
        result.summary = summary.read_text() if summary.exists() else ""
        return result

    def _step(self, step: dict, ctx: dict, work: Path, env: dict[str, str]) -> tuple[int, str]:
        uses = step.get("uses")
        if uses is None:
            script = expand(step["run"], ctx)
            cwd = work / (step.get("working-directory") or "")
            proc = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                cwd=cwd, env=env, capture_output=True, text=True, timeout=1800,
            )  # fmt: skip
            return proc.returncode, proc.stdout + proc.stderr
        with_ = expand(step.get("with") or {}, ctx)
        action = uses.split("@", 1)[0]
        if action == "actions/checkout":
            shutil.rmtree(work, ignore_errors=True)
            files = subprocess.run(
                ["git", "-C", str(self.repo), "ls-files", "-z"], capture_output=True, check=True
            ).stdout.split(b"\0")
            for rel in filter(None, (f.decode() for f in files)):
                (work / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.repo / rel, work / rel)
            return 0, f"checkout stand-in: {len(files) - 1} committed files"
        if action == "actions/setup-python":
            return 0, "setup-python stand-in: the Python on PATH"
        if action in ("actions/upload-artifact", "actions/download-artifact"):
            store = self.root / "artifacts" / with_["name"]
            if action.endswith("upload-artifact"):
                for pattern in str(with_["path"]).split():
                    src = work / pattern
                    if src.exists():
                        dst = store / pattern
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        (shutil.copytree if src.is_dir() else shutil.copy2)(
                            src, dst, **({"dirs_exist_ok": True} if src.is_dir() else {})
                        )
                return 0, f"upload-artifact stand-in: {with_['name']}"
            dest = work / with_.get("path", ".")
            for item in store.iterdir():
                target = (
                    dest / item.name if item.name != Path(with_.get("path", ".")).name else dest
                )
                (shutil.copytree if item.is_dir() else shutil.copy2)(
                    item, target, **({"dirs_exist_ok": True} if item.is_dir() else {})
                )
            return 0, f"download-artifact stand-in: {with_['name']}"
        raise NotRunnable(f"{uses}: no stand-in for this action; the harness does not run it")
