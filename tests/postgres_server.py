"""A PostgreSQL server of the tests' own, started in a temporary folder on a loopback port: the `postgres` fixture
(conftest.py offers it to every module), and `requires_postgres`, which skips where the server's programs are
missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from ports import free_port

SERVER_FOLDERS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
SERVER_BIN = next((folder for folder in SERVER_FOLDERS if (folder / "pg_ctl").is_file()), None)
if SERVER_BIN is None and shutil.which("pg_ctl") and shutil.which("initdb"):
    SERVER_BIN = Path(shutil.which("pg_ctl")).parent

requires_postgres = pytest.mark.skipif(SERVER_BIN is None, reason="the PostgreSQL server binaries (initdb, pg_ctl) are "
                                       "not installed (Debian: postgresql-15; they live in /usr/lib/postgresql/15/bin)")


@pytest.fixture(scope="session")
def postgres() -> str:
    """A PostgreSQL server for the test session (one per xdist worker), shared by the modules that use it: its
    URL. Each test names its own study. As root, the server runs as `postgres` (initdb
    and pg_ctl refuse root), in a folder that user owns."""
    as_server_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="digitlab-postgres-"))
    if as_server_user:
        shutil.chown(root, "postgres", "postgres")
    def server(*command: str) -> None:
        subprocess.run([*as_server_user, *command], check=True, capture_output=True, timeout=120)

    server(str(SERVER_BIN / "initdb"), "-D", str(root / "data"), "-U", "digitlab", "--auth=trust", "-E", "UTF8")
    # PostgreSQL cannot be told to pick a free port itself: take one the system says is free, and try again with
    # another if something else bound it before the server did (the start fails, saying so in its log).
    for attempt in range(5):
        port = free_port()
        log = root / f"server-{attempt}.log"
        try:
            server(str(SERVER_BIN / "pg_ctl"), "-D", str(root / "data"), "-l", str(log), "-w", "-o",
                   f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
            break
        except subprocess.CalledProcessError:
            if "could not bind" not in log.read_text(errors="replace"):
                raise AssertionError(f"PostgreSQL did not start:\n{log.read_text(errors='replace')[-3000:]}")
    else:
        raise AssertionError(f"PostgreSQL found no free port in 5 tries:\n{log.read_text(errors='replace')[-3000:]}")
    try:
        yield f"postgresql://digitlab@127.0.0.1:{port}/postgres"
    finally:
        server(str(SERVER_BIN / "pg_ctl"), "-D", str(root / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
