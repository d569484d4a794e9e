"""Compile the gateway's hot path with Cython (ADR 0006): `python -m tools.speedups build`.

Builds `gateway/front.py` and `gateway/http1.py` (with their `.pxd` declarations) into
extension modules beside them, then writes `gateway/_speedups.json` with the digests of the
sources they were built from; `gateway._speedups` uses an extension only while its digest
matches. Without a C compiler the build fails, says so and leaves the pure-Python gateway in
place (exit status 0 unless --strict): the gateway works either way, only slower.

    python -m tools.speedups build [--strict]   compile, write the manifest
    python -m tools.speedups clean              remove the extensions and the manifest
    python -m tools.speedups status             which modules a new process would run compiled
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = ROOT / "gateway"
BUILD = ROOT / "build" / "speedups"
LOG = ROOT / "build" / "speedups.log"
# annotation_typing: the .py annotations type the extension types' arguments and attributes
# (most of the gain); binding: the compiled functions keep Python's introspection.
DIRECTIVES = {"language_level": 3, "binding": True, "annotation_typing": True}


def _extensions() -> list[Path]:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    from gateway._speedups import COMPILED

    return [GATEWAY / f"{m.rpartition('.')[2]}{suffix}" for m in COMPILED]


def clean() -> None:
    from gateway._speedups import MANIFEST

    MANIFEST.unlink(missing_ok=True)
    for path in _extensions():
        path.unlink(missing_ok=True)
    for module in ("front", "http1"):
        (GATEWAY / f"{module}.c").unlink(missing_ok=True)
    shutil.rmtree(BUILD, ignore_errors=True)


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """The compiler's chatter (file descriptors 1 and 2, children included) goes to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("wb") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def build() -> None:
    from Cython import __version__ as cython_version
    from Cython.Build import cythonize
    from setuptools import Extension
    from setuptools.dist import Distribution

    from gateway._speedups import COMPILED, MANIFEST, digest

    clean()  # never leave an extension beside a manifest it does not match
    BUILD.mkdir(parents=True, exist_ok=True)
    extensions = [
        Extension(
            module,
            [str(GATEWAY / f"{module.rpartition('.')[2]}.py")],
            # Cython types an `async def`'s coroutine with its result annotation: a harmless
            # cast that newer gcc reports as an error unless told otherwise.
            extra_compile_args=["-O2", "-Wno-incompatible-pointer-types"],
        )
        for module in COMPILED
    ]
    modules = cythonize(
        extensions,
        compiler_directives=DIRECTIVES,
        build_dir=str(BUILD / "c"),
        quiet=True,
        force=True,
    )
    dist = Distribution({"name": "portico-speedups", "ext_modules": modules})
    cmd = dist.get_command_obj("build_ext")
    cmd.inplace = True
    cmd.build_temp = str(BUILD / "tmp")
    cmd.build_lib = str(BUILD / "lib")
    cmd.ensure_finalized()
    cmd.run()
    manifest = {
        "cython": cython_version,
        "python": sys.version.split()[0],
        "digests": {m: digest(m) for m in COMPILED},
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")


def status() -> dict[str, bool]:
    from gateway._speedups import COMPILED, enabled, stale

    out = stale() if enabled() else set(COMPILED)
    built = {p.stem.split(".")[0] for p in _extensions() if p.exists()}
    return {m: m not in out and m.rpartition(".")[2] in built for m in COMPILED}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.speedups", description=__doc__)
    parser.add_argument("command", choices=["build", "clean", "status"])
    parser.add_argument("--strict", action="store_true", help="fail when the build fails")
    args = parser.parse_args(argv)
    if args.command == "clean":
        clean()
        return 0
    if args.command == "status":
        for module, compiled in status().items():
            print(f"{module}: {'compiled' if compiled else 'pure Python'}")
        return 0
    try:
        with _output_to(LOG):
            build()
    except BaseException as exc:  # a compiler error comes as many kinds of exception
        clean()
        if isinstance(exc, KeyboardInterrupt):
            raise
        tail = LOG.read_text(errors="replace").splitlines()[-15:] if LOG.exists() else []
        print("\n".join(tail), file=sys.stderr)
        print(
            f"speedups: build failed ({type(exc).__name__}: {exc}; log: {LOG}); the gateway "
            "runs as pure Python. A C compiler and the Python headers are needed "
            "(Debian: apt-get install -y gcc python3-dev).",
            file=sys.stderr,
        )
        return 1 if args.strict else 0
    print(f"speedups: compiled {', '.join(status())} (log: {LOG})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
