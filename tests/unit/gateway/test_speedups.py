"""The compiled hot path (ADR 0006) runs only while it matches its source, and can be off."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import _speedups
from gateway._speedups import COMPILED, digest, enabled, stale

ROOT = Path(__file__).resolve().parents[3]


def _tree(tmp_path: Path) -> Path:
    for name in ("front", "http1"):
        (tmp_path / f"{name}.py").write_text(f"# {name}\n")
        (tmp_path / f"{name}.pxd").write_text(f"# {name} declarations\n")
    manifest = tmp_path / "_speedups.json"
    manifest.write_text(json.dumps({"digests": {m: digest(m, tmp_path) for m in COMPILED}}))
    return manifest


def test_a_build_matching_its_sources_is_used(tmp_path: Path) -> None:
    assert stale(_tree(tmp_path), tmp_path) == set()


def test_an_edited_source_or_declaration_makes_its_module_stale(tmp_path: Path) -> None:
    manifest = _tree(tmp_path)
    (tmp_path / "front.py").write_text("# front, edited after the build\n")
    assert stale(manifest, tmp_path) == {"gateway.front"}
    (tmp_path / "http1.pxd").write_text("# edited\n")
    assert stale(manifest, tmp_path) == {"gateway.front", "gateway.http1"}


@pytest.mark.parametrize("text", [None, "not json", "{}", '{"digests": 3}'])
def test_no_usable_manifest_means_pure_python(tmp_path: Path, text: str | None) -> None:
    _tree(tmp_path)
    manifest = tmp_path / "_speedups.json"
    if text is None:
        manifest.unlink()
    else:
        manifest.write_text(text)
    assert stale(manifest, tmp_path) == set(COMPILED)


def test_the_setting_is_validated() -> None:
    assert enabled({}) is True
    assert enabled({"PORTICO_SPEEDUPS": "OFF"}) is False
    with pytest.raises(ValueError, match="PORTICO_SPEEDUPS"):
        enabled({"PORTICO_SPEEDUPS": "fast"})


def _modules_in(cwd: Path, env: dict[str, str] | None = None) -> list[str]:
    """Which of the compiled modules a new interpreter, importing `gateway` from cwd, runs."""
    code = (
        "import gateway.front, gateway.http1, json; from gateway._speedups import "
        "compiled_modules; print(json.dumps([compiled_modules(), gateway.front.__file__]))"
    )
    full = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=full, capture_output=True, text=True, check=True
    )
    compiled, _ = json.loads(out.stdout)
    return compiled


def _built() -> bool:
    if stale() == set():
        return True
    if os.environ.get("CI") == "true":
        pytest.fail("the gateway's hot path is not compiled: `make install` must build it in CI")
    pytest.skip("no current build of the speedups (make speedups)")


def test_the_built_modules_are_used_and_can_be_turned_off() -> None:
    _built()
    assert _modules_in(ROOT) == list(COMPILED)
    assert _modules_in(ROOT, {"PORTICO_SPEEDUPS": "off"}) == []


def test_an_edit_after_the_build_runs_the_edited_source(tmp_path: Path) -> None:
    """A copy of the built package whose front.py changed: its extension is not imported."""
    _built()
    package = tmp_path / "gateway"
    shutil.copytree(Path(_speedups.__file__).parent, package)
    with (package / "front.py").open("a") as source:
        source.write("\nEDITED = True\n")
    code = "import gateway.front as f, gateway.http1 as h; print(f.EDITED, h.__file__)"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    edited, http1 = out.stdout.split()
    assert edited == "True"
    assert not http1.endswith(".py") and http1.startswith(str(package))  # still compiled


def test_an_invalid_setting_stops_the_gateway_with_a_message() -> None:
    env = {**os.environ, "PORTICO_SPEEDUPS": "fast", "GATEWAY_PORT": "0"}
    out = subprocess.run(
        [sys.executable, "-m", "gateway"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "PORTICO_SPEEDUPS must be 'on' or 'off'" in out.stderr
    assert "Traceback" not in out.stderr
