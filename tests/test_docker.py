"""docker-compose.yml, the Dockerfile and .dockerignore, checked without a Docker engine.

What can be checked here is checked: the compose file parses and has its services, every
``gradq`` command line in it is a real command of the CLI with real options, the image
installs this project and its entrypoint is the project's console script, and the build
context leaves out what an image never needs.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import click
import pytest
import sqlalchemy as sa
import yaml
from gradq.cli.main import main

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"redis", "postgres", "migrate", "worker-gpu", "worker-cpu", "flower", "ui"}
GRADQ_SERVICES = SERVICES - {"redis", "postgres"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    """The instructions of each named build stage."""
    out: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for word, rest in dockerfile():
        if word == "FROM":
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert m and m.group(2), f"unnamed stage: FROM {rest}"
            current = out.setdefault(m.group(2), [("FROM", m.group(1))])
        else:
            current.append((word, rest))
    return out


def exec_form(value: str) -> list[str]:
    return yaml.safe_load(value)  # a JSON array is a YAML flow sequence


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set: the default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def argv(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def resolve(args: list[str]) -> click.Command:
    """The CLI command an argument list runs; raises ``click.UsageError`` if it is not one.

    Walks the groups with ``get_command`` and then lets the command parse the rest, so an
    unknown option or a missing argument is refused just as ``gradq`` would refuse it.
    """
    command: click.Command = main
    ctx = click.Context(main, info_name="gradq")
    rest = list(args)
    while isinstance(command, click.Group):
        while rest and rest[0].startswith("-"):  # the group's own options (`gradq -v ls`)
            option = next((p for p in command.params
                           if isinstance(p, click.Option) and rest[0] in p.opts), None)
            if option is None:
                break
            rest = rest[1 if option.is_flag or option.count else 2:]
        if not rest or rest[0].startswith("-"):
            if command.invoke_without_command:  # e.g. `gradq datasets --json`
                break
            raise click.UsageError(f"{args}: no subcommand of {ctx.command_path}")
        name = rest.pop(0)
        sub = command.get_command(ctx, name)
        if sub is None:
            raise click.UsageError(f"{args}: {ctx.command_path} has no command {name!r}")
        command = sub
        ctx = click.Context(sub, info_name=name, parent=ctx)
    with command.make_context(ctx.info_name, rest, parent=ctx.parent) as parsed:
        for token in rest:
            if token.startswith("--"):
                option = token.split("=", 1)[0]
                assert any(option in p.opts for p in command.params), (args, option)
        assert parsed.command is command
    return command


# --------------------------------------------------------------- compose
def test_compose_has_the_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES


def test_redis_and_postgres_have_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "redis-cli" in argv(services["redis"]["healthcheck"]["test"])
    assert any("pg_isready" in a for a in argv(services["postgres"]["healthcheck"]["test"]))
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker-gpu", "worker-cpu"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"


def test_every_gradq_service_is_configured_for_postgres_and_redis(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    pg = services["postgres"]["environment"]
    for name in GRADQ_SERVICES:
        env = services[name]["environment"]
        db = sa.make_url(interpolate(env["GRADQ_DATABASE_URL"]))
        assert db.get_backend_name() == "postgresql" and db.get_driver_name() == "psycopg"
        assert db.host == "postgres" and db.database == pg["POSTGRES_DB"]
        assert db.username == pg["POSTGRES_USER"]
        assert db.password == interpolate(pg["POSTGRES_PASSWORD"])
        assert re.fullmatch(r"redis://redis:6379/\d+", env["GRADQ_BROKER_URL"])


def test_the_gpu_worker_reserves_nvidia_devices(compose: dict[str, Any]) -> None:
    gpu = compose["services"]["worker-gpu"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert device.get("count", "all") == "all" or int(device["count"]) >= 1
    assert gpu["build"]["target"] == "gpu"


def gradq_command_lines(compose: dict[str, Any]) -> dict[str, list[str]]:
    """Every command line of the compose file that runs ``gradq``, by service."""
    entrypoint = exec_form(dict(stages()["cpu"])["ENTRYPOINT"])
    out = {}
    for name, service in compose["services"].items():
        if "build" not in service:
            continue  # redis, postgres: their images' own commands
        line = argv(service.get("entrypoint")) or entrypoint
        line = [*line, *argv(service.get("command"))]
        if line[0] == "gradq":
            out[name] = line[1:]
    return out


def test_every_gradq_command_in_compose_is_a_real_command(compose: dict[str, Any]) -> None:
    lines = gradq_command_lines(compose)
    assert set(lines) == {"migrate", "worker-gpu", "worker-cpu", "ui"}
    assert resolve(lines["migrate"]).name == "upgrade"
    assert lines["migrate"][:2] == ["db", "upgrade"]
    assert resolve(lines["worker-gpu"]).name == "worker"
    assert lines["worker-gpu"][1:] == ["--gpus", "all"]
    assert resolve(lines["worker-cpu"]).name == "worker"
    assert "--cpu" in lines["worker-cpu"]
    assert resolve(lines["ui"]).name == "ui"


def test_the_dashboard_is_published_to_the_host_only(compose: dict[str, Any]) -> None:
    ui = compose["services"]["ui"]
    line = argv(ui["command"])
    port = line[line.index("--port") + 1]
    # inside its container it must listen beyond loopback, or the published port is dead
    assert line[line.index("--host") + 1] == "0.0.0.0"
    assert ui["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert ui["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_the_resolver_refuses_what_gradq_would_refuse() -> None:
    for bad in (["wroker"], ["db"], ["db", "upgrad"], ["worker", "--gpu", "all"],
                ["results"], ["ls", "--limit", "none"]):
        with pytest.raises(click.UsageError):
            resolve(bad)
    assert resolve(["ls", "--json"]).name == "ls"
    assert resolve(["datasets", "--json"]).name == "datasets"
    assert resolve(["-v", "db", "upgrade"]).name == "upgrade"


def test_flower_runs_the_celery_app_of_the_workers(compose: dict[str, Any],
                                                   pyproject: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    line = [*argv(flower["entrypoint"]), *argv(flower["command"])]
    assert line[0] == "celery" and "flower" in line
    module = line[line.index("-A") + 1]
    assert module == "gradq.workers.tasks"
    from celery import Celery

    assert isinstance(importlib.import_module(module).app, Celery)
    # its image installs the flower extra
    assert "flower" in pyproject["project"]["optional-dependencies"]
    assert flower["build"]["target"] == "cpu"
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for word, rest in stages()["cpu"]
            if word == "ARG" and "=" in rest}
    assert "flower" in args["EXTRAS"].split(",")


# ------------------------------------------------------------ Dockerfile
def test_the_image_is_python_311_slim_with_a_cpu_and_a_gpu_stage() -> None:
    s = stages()
    assert set(s) >= {"cpu", "gpu"}
    assert s["cpu"][0] == ("FROM", "python:3.11-slim")
    assert s["gpu"][0] == ("FROM", "cpu")


def _pip_installs(instructions: list[tuple[str, str]]) -> list[str]:
    """The targets of every ``pip install`` in RUN instructions."""
    targets = []
    for word, rest in instructions:
        if word != "RUN":
            continue
        for part in re.split(r"&&|;", rest):
            tokens = shlex.split(part)
            if tokens[:2] == ["pip", "install"] or tokens[1:4] == ["-m", "pip", "install"]:
                targets += [t for t in tokens[tokens.index("install") + 1:]
                            if not t.startswith("-")]
    return targets


def test_the_image_installs_this_project(pyproject: dict[str, Any]) -> None:
    s = stages()
    cpu = s["cpu"]
    workdir = [rest for word, rest in cpu if word == "WORKDIR"][0]
    copied = " ".join(rest for word, rest in cpu if word == "COPY")
    # everything the build reads is copied: pyproject.toml, its readme, every package folder
    for needed in ["pyproject.toml", pyproject["project"]["readme"],
                   *pyproject["tool"]["setuptools"]["package-dir"].values()]:
        assert re.search(rf"(^|\s){re.escape(needed)}/?(\s|$)", copied), needed
    # and pip installs that directory (not editable), with extras of pyproject.toml
    extras = set(pyproject["project"]["optional-dependencies"])
    for stage, want in (("cpu", set()), ("gpu", {"cuda12"})):
        targets = [t for t in _pip_installs(s[stage]) if t.startswith((workdir, "."))]
        assert targets, f"stage {stage} does not pip install the project"
        m = re.fullmatch(r"(?:\.|" + re.escape(workdir) + r")(?:\[(.*)\])?", targets[0])
        assert m, targets[0]
        named = {e for e in (m.group(1) or "").split(",") if e and not e.startswith("$")}
        assert named <= extras and want <= named, (stage, named)
    assert "-e" not in " ".join(rest for word, rest in cpu if word == "RUN")


def test_the_copied_files_build_the_package(tmp_path: Path) -> None:
    """Build a wheel from exactly what the Dockerfile copies, as its ``pip install`` does."""
    context = tmp_path / "context"
    for word, rest in stages()["cpu"]:
        if word != "COPY":
            continue
        *sources, dest = [t for t in shlex.split(rest) if not t.startswith("--")]
        for src in sources:
            assert dest in ("./", src), f"COPY {rest}: copy to the same relative path"
            target = context / src.rstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if (ROOT / src).is_dir():
                shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns(
                    "__pycache__", "*.pyc", "*.egg-info"))
            else:
                shutil.copy2(ROOT / src, target)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                          "--no-build-isolation", "--no-cache-dir", "-q", "-w",
                          str(tmp_path / "dist"), str(context)],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("gradq-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names
                            if n.endswith(".dist-info/entry_points.txt"))
    for module in ("gradq/__init__.py", "gradq/cli/main.py", "gradq/service/store/leases.py",
                   "gradq/workers/tasks.py", "gradq/train/loop.py", "gradq/nn/backend.py",
                   "gradq/migrations/env.py", "gradq/migrations/alembic.ini",
                   "gradq/migrations/script.py.mako",
                   "gradq/migrations/versions/0001_initial.py", "gradq/ui/app.py",
                   "gradq/ui/templates/job.html", "gradq/ui/static/app.js"):
        assert module in names, module
    assert re.search(r"^gradq\s*=\s*gradq\.cli\.main:main$", entry_points, re.MULTILINE)


def test_the_image_runs_as_a_user_not_root() -> None:
    for stage in stages().values():
        users = [rest for word, rest in stage if word == "USER"]
        assert users and users[-1] not in ("root", "0"), users


def test_the_entrypoint_is_the_console_script(pyproject: dict[str, Any]) -> None:
    entry = exec_form(dict(stages()["cpu"])["ENTRYPOINT"])
    scripts = pyproject["project"]["scripts"]
    assert entry == ["gradq"] and "gradq" in scripts
    module, _, attr = scripts["gradq"].partition(":")
    assert getattr(importlib.import_module(module), attr) is main
    assert "ENTRYPOINT" not in dict(stages()["gpu"])  # inherited from the cpu stage


# ---------------------------------------------------------- .dockerignore
def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, enough for these patterns: the last matching pattern wins."""
    result = False
    for p in patterns:
        negate = p.startswith("!")
        p = p.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatchcase(x, p) or fnmatch.fnmatchcase(x, p.replace("**/", ""))
               for x in prefixes) or (p.startswith("**/") and any(
                fnmatch.fnmatchcase(seg, p[3:]) for seg in parts)):
            result = not negate
    return result


def test_dockerignore_leaves_out_git_and_caches() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in (".git", ".git/HEAD", "service/__pycache__/jobs.cpython-311.pyc",
                 "__pycache__/x.pyc", ".pytest_cache/v", ".ruff_cache/x", "gradq.egg-info/PKG",
                 "nn/backend.pyc", ".venv/bin/python"):
        assert _ignored(path, patterns), path
    # and keeps what the Dockerfile copies
    for path in ("pyproject.toml", "README.md", "service/store/leases.py", "migrations/alembic.ini",
                 "migrations/versions/0001_initial.py", "nn/backend.py",
                 "examples/quickstart.yaml"):
        assert not _ignored(path, patterns), path
