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
SKIPPED_FOLDERS = {"node_modules", "dist"}


def cache_folder() -> Path:
    """Return where built apps are kept: the user's cache, or the checkout's tmp/ without one.

    In the user's cache every checkout on the machine shares one build: npm and vite take
    half a minute to a minute and a half of the suite's time.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = Path(base) / "kindler"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return ROOT / "tmp" / "cache"
    return folder if os.access(folder, os.W_OK) else ROOT / "tmp" / "cache"


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
    cache = cache_folder()
    built = cache / f"webui-{source_hash(SOURCE)}"
    if (built / "index.html").is_file():
        return built
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="build-") as tmp:
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
