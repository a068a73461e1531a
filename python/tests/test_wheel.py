"""The package builds a wheel that installs and imports without the source tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

PYTHON_DIR = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_into_a_fresh_environment(tmp_path: Path) -> None:
    pytest.importorskip("build", reason="python -m build needs the build package (scripts/deps.sh)")
    # Built from a copy, so the build's scratch directories stay out of the source tree.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(PYTHON_DIR / name, source / name)
    shutil.copytree(
        PYTHON_DIR / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(source)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    wheels = list(dist.glob("hutch-*.whl"))
    assert len(wheels) == 1, wheels

    env = tmp_path / "env"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheels[0])],
        check=True,
        cwd=tmp_path,
    )
    # The dependencies (httpx, websockets) come from this environment's site-packages, added
    # as a plain path: its editable install of the source tree is not seen there.
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = (
        "import hutch, hutch.pty, pathlib;"
        "print(pathlib.Path(hutch.__file__).resolve());"
        "print(hutch.AsyncSessionsClient.__name__, hutch.SessionsClient.__name__);"
        "print((pathlib.Path(hutch.__file__).parent / 'py.typed').exists())"
    )
    out = subprocess.run(
        [str(python), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path
    ).stdout.split("\n")
    assert Path(out[0]).is_relative_to(env.resolve()), out[0]
    assert out[1] == "AsyncSessionsClient SessionsClient"
    assert out[2] == "True"
