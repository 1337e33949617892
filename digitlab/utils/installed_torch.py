"""Whether the installed torchvision was built for the installed torch.

A torchvision built for another torch, or for CUDA beside a CPU-only torch (what pip installs when PyTorch's own
index is unreachable and it falls back to PyPI for one of them), fails as Lightning imports it, with a 30-line
traceback ending in ``operator torchvision::nms does not exist``. `check` reads both version files as text,
without importing either (milliseconds), before a command imports torch; `mismatch_error` explains that failure
when it happens anyway.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Optional

from digitlab.errors import UserError

_VERSION = re.compile(r"^__version__\s*(?::\s*\w+\s*)?=\s*['\"]([^'\"]+)['\"]", re.MULTILINE)
_RELEASE = re.compile(r"(\d+)\.(\d+)\.\d+")
_FAILED_IMPORT = re.compile(r"operator torchvision::\w+ does not exist")
PYTORCH_INDEX = "https://download.pytorch.org/whl"
# torchvision 0.N goes with torch 2.(N - 15): 0.15 with 2.0, 0.20 with 2.5, 0.29 with 2.14.
FIRST_FOR_TORCH_2 = 15


def installed_version(package: str) -> Optional[str]:
    """`package`'s ``__version__`` as its ``version.py`` spells it (``2.14.1+cu130``), read without importing it;
    None when it is not installed or has no such file."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "version.py").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    found = _VERSION.search(text)
    return found.group(1) if found else None


def check() -> None:
    """Refuse, in one line with the fix, a torchvision that was not built for the installed torch."""
    torch, torchvision = installed_version("torch"), installed_version("torchvision")
    if torch and torchvision and _mismatch(torch, torchvision):
        raise _refusal(torch, torchvision)


def mismatch_error(error: BaseException) -> Optional[UserError]:
    """The one-line explanation of torchvision's import failure among `error`'s causes, or None."""
    from digitlab.errors import causes

    if not any(isinstance(cause, RuntimeError) and _FAILED_IMPORT.search(str(cause)) for cause in causes(error)):
        return None
    return _refusal(installed_version("torch") or "unknown", installed_version("torchvision") or "unknown")


def _mismatch(torch: str, torchvision: str) -> Optional[str]:
    """Why `torchvision` does not go with `torch` (both as their version files spell them), or None."""
    expected = _torch_for(torchvision)
    release = _RELEASE.match(torch)
    if expected and release and (int(release.group(1)), int(release.group(2))) != expected:
        return f"built for torch {expected[0]}.{expected[1]}"
    builds = _build(torch), _build(torchvision)
    if None not in builds and builds[0] != builds[1]:
        return f"built for {_describe(builds[1])}"
    return None


def _torch_for(torchvision: str) -> Optional[tuple[int, int]]:
    release = _RELEASE.match(torchvision)
    if release is None or release.group(1) != "0" or int(release.group(2)) < FIRST_FOR_TORCH_2:
        return None
    return 2, int(release.group(2)) - FIRST_FOR_TORCH_2


def _build(version: str) -> Optional[tuple[str, str]]:
    """What a build runs on, from its local version: ``+cpu`` -> (cpu, ''), ``+cu128`` -> (cuda, '12'); None when
    the version does not say (a PyPI build: its files hold no local version)."""
    local = version.partition("+")[2]
    if local == "cpu":
        return "cpu", ""
    if cuda := re.fullmatch(r"cu(\d+)\d", local):
        return "cuda", cuda.group(1)
    if rocm := re.fullmatch(r"rocm(\d+)(\.\d+)*", local):
        return "rocm", rocm.group(1)
    return None


def _describe(build: tuple[str, str]) -> str:
    kind, major = build
    return "CPU only" if kind == "cpu" else f"{'CUDA' if kind == 'cuda' else 'ROCm'} {major}"


def _refusal(torch: str, torchvision: str) -> UserError:
    why = _mismatch(torch, torchvision) if "unknown" not in (torch, torchvision) else None
    public, _, local = torch.partition("+")
    index = f" --index-url {PYTORCH_INDEX}/{local}" if local else ""
    pinned = f"torch=={public}" if _RELEASE.match(public) else "torch"
    return UserError(
        f"torchvision {torchvision} does not go with torch {torch}"
        f"{f' (it was {why})' if why else ''}, so it cannot be imported. Install the torchvision built for this "
        f"torch: `pip install --force-reinstall {pinned} torchvision{index}` (docs/install.md).")
