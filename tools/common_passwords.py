"""Regenerate identity's list of common passwords from a pinned Django wheel.

The list is the one Django's `CommonPasswordValidator` uses (about 20,000 of the most common
passwords from breach corpora, lower-cased, most common first; compiled by Royce Williams,
shipped in Django under the BSD licence). It is copied byte for byte, uncompressed, to
`services/identity/data/common-passwords.txt`; the wheel and the list are both checked against
the SHA-256 pinned below, so a regenerated file is the file in the repository.

    python -m tools.common_passwords            # download the wheel (pip) and rewrite the file
    python -m tools.common_passwords --check    # offline: the shipped file is the pinned list
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DJANGO_VERSION", "LIST_FILE", "LIST_SHA256", "main"]

DJANGO_VERSION = "5.2.19"
WHEEL = f"django-{DJANGO_VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "5965d974a5218a2b68a11dd1276434707f23886525c23f0598eccedaf4f4ca00"
MEMBER = "django/contrib/auth/common-passwords.txt.gz"
LIST_SHA256 = "29ca0fa5303165f012f3e9775e3e95a3071cdd59f219973ec1cbb308d0214a6f"
LIST_FILE = Path(__file__).resolve().parent.parent / "services/identity/data/common-passwords.txt"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def extract(wheel: Path) -> bytes:
    """The uncompressed list from the wheel, after checking both digests."""
    if _sha256(wheel.read_bytes()) != WHEEL_SHA256:
        raise SystemExit(f"{wheel.name}: SHA-256 differs from the pinned {WHEEL_SHA256}")
    with zipfile.ZipFile(wheel) as archive:
        data = gzip.decompress(archive.read(MEMBER))
    if _sha256(data) != LIST_SHA256:
        raise SystemExit(f"{MEMBER}: SHA-256 differs from the pinned {LIST_SHA256}")
    return data


def download(directory: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
    command += ["--only-binary", ":all:", f"django=={DJANGO_VERSION}", "-d", str(directory)]
    subprocess.run(command, check=True)
    return directory / WHEEL


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.common_passwords")
    parser.add_argument("--check", action="store_true", help="verify the shipped file, offline")
    args = parser.parse_args(argv)
    if args.check:
        ok = _sha256(LIST_FILE.read_bytes()) == LIST_SHA256
        print(f"{LIST_FILE}: {'matches' if ok else 'DIFFERS from'} Django {DJANGO_VERSION}'s list")
        return 0 if ok else 1
    with tempfile.TemporaryDirectory() as tmp:
        LIST_FILE.parent.mkdir(parents=True, exist_ok=True)
        LIST_FILE.write_bytes(extract(download(Path(tmp))))
    print(f"wrote {LIST_FILE} from Django {DJANGO_VERSION}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
