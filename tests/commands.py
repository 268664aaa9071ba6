"""The `smsinbox` command run as a test needs it: in this process, or as a real process."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from smsinbox.cli import app


@dataclasses.dataclass(frozen=True)
class Ran:
    """What a command did: as subprocess.CompletedProcess has it."""

    returncode: int
    stdout: str
    stderr: str


def smsinbox(
    database_url: str | None,
    *args: str,
    input: str | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    process: bool = False,
) -> Ran:
    """Run a command with only these settings: in this process (a process per command costs
    a second of imports), or as a real process when the process itself is what is tried
    (`process`, or a working directory of its own)."""
    given = dict(env or {})
    if database_url is not None:
        given["SMSINBOX_DATABASE_URL"] = database_url
    if process or cwd is not None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SMSINBOX_")}
        done = subprocess.run(
            [sys.executable, "-m", "smsinbox", *args],
            env={**environment, **given},
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=cwd,
        )
        return Ran(done.returncode, done.stdout, done.stderr)
    cleared: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SMSINBOX_")}
    result = CliRunner().invoke(app, list(args), input=input, env={**cleared, **given})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)
