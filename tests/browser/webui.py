"""The original Kindler web UI built from ../shared/peer with npm, cached by its source's hash."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT.parent / "shared" / "peer" / "kindler-original" / "webui" / "frontend"
CACHE = ROOT / "tmp" / "cache"
SKIPPED_FOLDERS = {"node_modules", "dist"}


def source_hash(folder: Path) -> str:
    """Return a digest of every file of the app's source (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and not SKIPPED_FOLDERS & set(relative.parts):
            digest.update(str(relative).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def built_webui() -> Path:
    """Return the folder of the built app (its dist/), building it once per source version.

    Skips the test when the source or npm is missing.
    """
    if not (SOURCE / "package.json").is_file():
        pytest.skip(f"the original web UI's source is not at {SOURCE}")
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (apt-get install -y npm)")
    built = CACHE / f"webui-{source_hash(SOURCE)}"
    if (built / "index.html").is_file():
        return built
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="build-") as tmp:
        work = Path(tmp) / "frontend"
        shutil.copytree(SOURCE, work, ignore=shutil.ignore_patterns(*SKIPPED_FOLDERS))
        # No lockfile in the source: `npm ci` would refuse.
        for command in (
            [npm, "install", "--no-audit", "--no-fund"],
            [npm, "run", "build", "--", "--outDir", str(Path(tmp) / "dist")],
        ):
            result = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr[-4000:]}"
        # Renamed whole: a build that stopped halfway is never taken for a cached one.
        with_index = Path(tmp) / "dist"
        assert (with_index / "index.html").is_file()
        try:
            os.rename(with_index, built)
        except OSError:
            # Another run finished the same build first.
            assert (built / "index.html").is_file()
    return built
