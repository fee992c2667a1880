"""A stand-in for GitHub's runner (NOT GitHub Actions, NOT act): runs a workflow's jobs' `run:`
steps in order, on this machine, with the environment GitHub would give them.

What it does like GitHub: follows `uses: ./.github/workflows/<reusable>.yml` with its `with:`
inputs (and their defaults), orders jobs by `needs`, evaluates each job's and step's `if:`,
expands `${{ }}` in `with:`, `env:` and `run:` (contexts: github, inputs, vars, secrets, env,
needs, steps; functions: format, contains, startsWith, fromJSON, hashFiles, always, success,
failure, cancelled), merges workflow/job/step `env:`, sets GitHub's default variables (CI,
GITHUB_ACTIONS, GITHUB_WORKSPACE, GITHUB_EVENT_NAME/PATH, GITHUB_REF, GITHUB_SHA, GITHUB_RUN_ID,
GITHUB_JOB, GITHUB_STEP_SUMMARY, GITHUB_OUTPUT, GITHUB_ENV, RUNNER_TEMP, ...) and runs each
`run:` with GitHub's bash (`bash --noprofile --norc -eo pipefail`), reading GITHUB_OUTPUT and
GITHUB_ENV back after each step.

What it replaces (third-party actions cannot be fetched here), each by the smallest honest
equivalent: actions/checkout -> a fresh git clone of the repository at the run's commit per
job (no remote, no credentials); actions/setup-python -> the Python already on PATH;
upload-artifact / download-artifact -> a folder shared by the run. Any other `uses:` raises
NotRunnable: the harness never pretends a step ran. Jobs run one after another, never in parallel.

Not modelled: `runs-on` (every job runs here), `environment:` (recorded on the job's result;
GitHub's protection rules and environment-scoped secrets are not: `secrets` is the run's),
`concurrency`, `timeout-minutes`. A run may name jobs it takes as done (`given`: what GitHub's
build-image job would output, for instance) and restrict which jobs' steps run (`only`); every
other job is recorded as "not run", never as passed.

`docker_standin()` writes a `docker` for a runner's PATH that does `login` and `run` only: `run`
starts the container's command on this machine, in the mounted directory, with nothing of the
caller's environment but PATH (the image's tools: tfship preinstalled) and what `-e` passes, and
logs which variables it passed (names, and whether each had a value; never the value).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
IDENT = re.compile(r"(?<![\w'])([A-Za-z_][\w-]*(?:\.[\w*-]+)*)(?![\w'(])")
FUNCS = {"format", "contains", "startsWith", "endsWith", "fromJSON", "toJSON", "always"}
FUNCS |= {"hashFiles"}
# never leak into a job; COV_CORE_/COVERAGE_: an outer `pytest --cov` (make test) would make
# the job's own `pytest --cov` a measured subprocess of it, which then writes no coverage.xml
AMBIENT = ("GITHUB_", "CI_", "TFSHIP_", "GITLAB_", "AWS_", "COV_CORE_", "COVERAGE_")
FUNCS |= {"success", "failure", "cancelled", "true", "false", "null"}


class NotRunnable(RuntimeError):
    """A step this stand-in cannot run (an action it does not replace)."""


@dataclass
class JobResult:
    name: str
    status: str  # success | failure | skipped | not run (outside `only`)
    steps: list[tuple[str, int]] = field(default_factory=list)  # (step, exit code)
    outputs: dict[str, str] = field(default_factory=dict)
    summary: str = ""
    log: str = ""
    environment: str | None = None
    given: bool = False  # taken as done (Runner.given): its steps did not run here


def _lookup(ctx: dict[str, Any], dotted: str) -> Any:
    value: Any = ctx
    for part in dotted.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        else:
            return None
    if value is None and dotted.startswith(("vars.", "secrets.")):
        return ""  # GitHub: an unset variable or secret is '' (so `vars.X == ''` holds)
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
        "hashFiles": lambda *patterns: _hash_files(str(_lookup(ctx, "github.workspace")), patterns),
        "always": lambda: True,
        "success": lambda: status == "success",
        "failure": lambda: status == "failure",
        "cancelled": lambda: False,
        **{f"__s{i}": s for i, s in enumerate(strings)},
    }
    return eval(text, {"__builtins__": {}}, env)


def _hash_files(workspace: str, patterns: tuple[str, ...]) -> str:
    """GitHub's hashFiles(): '' when no file under the workspace matches, else a SHA-256."""
    import hashlib

    files = sorted({p for pat in patterns for p in Path(workspace).glob(pat) if p.is_file()})
    if not files:
        return ""
    outer = hashlib.sha256()
    for path in files:
        outer.update(hashlib.sha256(path.read_bytes()).digest())
    return outer.hexdigest()


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
    ref_protected: bool = False  # github.ref_protected / GITHUB_REF_PROTECTED
    given: dict[str, JobResult] = field(default_factory=dict)  # jobs taken as done, not run
    only: set[str] | None = None  # when set, only these jobs' steps run
    results: dict[str, JobResult] = field(default_factory=dict)

    def github(self, full: str) -> dict[str, Any]:
        job = full.rsplit("/", 1)[-1]
        return {
            "event_name": self.event_name,
            "event": self.event,
            "ref": self.ref,
            "ref_name": self.ref.rsplit("/", 1)[-1],
            "ref_protected": self.ref_protected,
            "repository": "team/shapes",
            "repository_owner": "team",
            "run_id": self.run_id,
            "run_attempt": "1",
            "sha": self._head(),
            "actor": "team-dev",
            "job": job,
            "token": self.secrets.get("GITHUB_TOKEN", ""),
            "workspace": str(self.root / "work" / full.replace("/", "__")),
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
            if full in self.given:
                self.results[full] = replace(self.given[full], name=full, given=True)
                continue
            # GitHub: failure() when a needed job failed; success() when all succeeded; a
            # skipped need makes neither true
            upstream = {self.results[f"{prefix}{n}"].status for n in needs}
            if "failure" in upstream:
                upstream_status = "failure"
            elif upstream <= {"success"}:
                upstream_status = "success"
            else:
                upstream_status = "skipped"
            if not _condition(job, ctx, upstream_status):
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
            if self.only is not None and full not in self.only:
                self.results[full] = JobResult(full, "not run")
                continue
            self.results[full] = self._run_job(full, job, workflow.get("env") or {}, ctx)
        return self.results

    def _needs_ctx(self, name: str) -> dict[str, Any]:
        r = self.results.get(name)
        return {"result": r.status if r else "skipped", "outputs": r.outputs if r else {}}

    def _ctx(self, job, inputs, needs, env, steps) -> dict[str, Any]:
        return {
            "github": self.github(job),
            "inputs": inputs,
            "vars": self.variables,
            "secrets": self.secrets,
            "needs": needs,
            "env": env,
            "steps": steps,
            "runner": {"os": "Linux", "temp": str(self.root / "tmp")},
        }

    def _run_job(self, name: str, job: dict, wf_env: dict, ctx: dict) -> JobResult:
        result = JobResult(name, "success", environment=expand(job.get("environment"), ctx))
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
                "GITHUB_REF_PROTECTED": _str(self.ref_protected),
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
            # what actions/checkout leaves: a git checkout of the run's commit (with .git, which
            # tfship reads to tell the committed pipeline.yaml from an edited one), no
            # credentials kept (persist-credentials: false)
            shutil.rmtree(work, ignore_errors=True)
            sha = ctx["github"]["sha"]
            for argv in (
                ["git", "clone", "--quiet", "--no-hardlinks", str(self.repo), str(work)],
                ["git", "-C", str(work), "checkout", "--quiet", "--detach", sha],
                ["git", "-C", str(work), "remote", "remove", "origin"],
            ):
                subprocess.run(argv, capture_output=True, check=True)
            files = subprocess.run(
                ["git", "-C", str(work), "ls-files", "-z"], capture_output=True, check=True
            ).stdout.split(b"\0")
            return 0, f"checkout stand-in: {len(files) - 1} committed files at {sha[:12]}"
        if action == "actions/setup-python":
            return 0, "setup-python stand-in: the Python on PATH"
        if action in ("actions/upload-artifact", "actions/download-artifact"):
            store = self.root / "artifacts" / with_["name"]
            if action.endswith("upload-artifact"):
                for pattern in str(with_["path"]).split():
                    if any(c in pattern for c in "*?["):  # upload-artifact's glob paths
                        found = sorted(work.glob(pattern.rstrip("/")))
                    else:
                        found = [work / pattern]
                    for src in (s for s in found if s.exists()):
                        dst = store / src.relative_to(work)
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


DOCKER_STANDIN = """#!{python}
# docker stand-in written by tests/e2e/github_steps_harness.py: `login` and `run` only.
import json, os, subprocess, sys

args = sys.argv[1:]
log = os.environ.get("DOCKER_STANDIN_LOG")


def record(entry):
    if log:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\\n")


if args[:1] == ["login"]:
    sys.stdin.read()  # --password-stdin: read, never echoed or kept
    record({{"cmd": "login", "args": [a for a in args[1:] if a != "--password-stdin"]}})
    print("Login Succeeded")
    sys.exit(0)
if args[:1] != ["run"]:
    print(f"docker stand-in: {{args[:1]}} is not supported", file=sys.stderr)
    sys.exit(125)
env = {{"PATH": os.environ["PATH"]}}  # the image's tools: tfship preinstalled
passed, mounts, workdir, entrypoint, gpus, i = {{}}, {{}}, None, None, None, 1
while i < len(args) and args[i].startswith("-"):
    flag = args[i]
    if flag == "--rm":
        i += 1
        continue
    value = args[i + 1]
    i += 2
    if flag in ("-e", "--env"):
        name, eq, val = value.partition("=")
        if eq:
            env[name], passed[name] = val, "value in argv"
        else:
            if name in os.environ:
                env[name] = os.environ[name]
            passed[name] = "set" if os.environ.get(name) else "empty"
    elif flag in ("-v", "--volume"):
        host, ctr = value.split(":")[:2]
        mounts[ctr] = host
    elif flag in ("-w", "--workdir"):
        workdir = value
    elif flag == "--entrypoint":
        entrypoint = value
    elif flag == "--gpus":
        gpus = value
    elif flag not in ("-u", "--user"):
        print(f"docker stand-in: {{flag}} is not supported", file=sys.stderr)
        sys.exit(125)
image, command = args[i], args[i + 1:]
cwd = None
for ctr, host in mounts.items():
    if workdir == ctr or (workdir or "").startswith(ctr.rstrip("/") + "/"):
        cwd = host + (workdir or "")[len(ctr):]
record({{"cmd": "run", "image": image, "gpus": gpus, "env": passed, "command": command}})
if cwd is None or entrypoint is None:
    print("docker stand-in: needs -w inside a -v mount and --entrypoint", file=sys.stderr)
    sys.exit(125)
sys.exit(subprocess.run([entrypoint, *command], cwd=cwd, env=env).returncode)
"""


def docker_standin(bin_dir: Path, python: str | None = None) -> Path:
    """Write the `docker` stand-in into bin_dir (put it first on the runner's PATH)."""
    import sys

    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "docker"
    path.write_text(DOCKER_STANDIN.format(python=python or sys.executable))
    path.chmod(0o755)
    return path
