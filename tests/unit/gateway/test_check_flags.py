"""`python -m gateway check` also checks the flags file (chassis.flags), by key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.__main__ import main
from gateway.config import check_config

from .conftest import BASE


def _files(tmp_path: Path, flags: str) -> tuple[Path, Path]:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    path = tmp_path / "flags.yaml"
    path.write_text(flags, encoding="utf-8")
    return config, path


def test_a_flags_file_that_does_not_parse_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, flags = _files(tmp_path, "flags: {catalog.v2_products: {enabled: true")
    monkeypatch.setenv("PORTICO_FLAGS_FILE", str(flags))
    with pytest.raises(SystemExit) as exited:
        main(["check", str(config)])
    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert f"PORTICO_FLAGS_FILE={flags}: <file>: {flags} is not valid YAML or JSON" in err


def test_a_bad_flag_rule_is_named_by_key_path(tmp_path: Path) -> None:
    config, flags = _files(tmp_path, "flags: {catalog.v2_products: {enabled: on, percent: 250}}")
    assert check_config(config, environ={"PORTICO_FLAGS_FILE": str(flags)}) == [
        f"PORTICO_FLAGS_FILE={flags}: flags.catalog.v2_products.percent: must be 0..100"
    ]
    missing = tmp_path / "nope.yaml"
    [line] = check_config(config, environ={"PORTICO_FLAGS_FILE": str(missing)})
    assert line.startswith(f"PORTICO_FLAGS_FILE={missing}: <file>: cannot read")


def test_a_good_flags_file_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, flags = _files(tmp_path, "flags: {catalog.v2_products: {enabled: true, percent: 10}}")
    assert check_config(config, environ={"PORTICO_FLAGS_FILE": str(flags)}) == []
    monkeypatch.chdir(tmp_path / "..")  # no flags.yaml here, none named: nothing to check
    assert check_config(config, environ={}) == []
