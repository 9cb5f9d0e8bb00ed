"""The two layers: engines never pull in the TUI, and the TUI starts without the heavy stack."""

from __future__ import annotations

import json
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import engines

REPO = Path(__file__).resolve().parent.parent
ENGINE_MODULES = sorted(f"engines.{m.name}" for m in pkgutil.iter_modules(engines.__path__))


def imported_after(modules: list[str], cwd: Path) -> set[str]:
    """The top-level packages in sys.modules after importing ``modules`` in a fresh Python."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONSTARTUP"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def test_every_engines_module_is_found() -> None:
    assert {
        "engines.ollama_client",
        "engines.chat_types",
        "engines.config",
        "engines.store",
        "engines.system",
    } <= set(ENGINE_MODULES)


def test_engines_never_import_the_tui_or_textual(tmp_path: Path) -> None:
    loaded = imported_after(["engines", *ENGINE_MODULES], tmp_path)
    assert "engines" in loaded
    assert loaded.isdisjoint({"textual", "tui", "rich_pixels", "textual_image"})
    assert list(tmp_path.iterdir()) == []  # and importing them writes nothing


def test_the_app_starts_without_the_heavy_stack(tmp_path: Path) -> None:
    loaded = imported_after(["tui.app", "tui.cli"], tmp_path)
    assert "textual" in loaded
    # torch & co load on first use; the ollama client (httpx, pydantic) in a thread after
    # the first frame.
    assert loaded.isdisjoint({"torch", "diffusers", "transformers", "ollama"})
    assert list(tmp_path.iterdir()) == []


def test_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    command = [str(lint)] if lint.exists() else [shutil.which("lint-imports") or "lint-imports"]
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken." in result.stdout
