"""Run the ecs-deploy command line as a separate process, so that ecs-train never imports ecs-deploy."""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecs_common.errors import ECSError

logger = logging.getLogger(__name__)

# Environment variable with the command that starts ecs-deploy, e.g. "/opt/deploy-venv/bin/ecs-deploy".
DEPLOY_COMMAND_ENV = "ECS_DEPLOY_COMMAND"

# Exit codes of ecs-deploy: the network does not fit, invalid input, simulation differs from --expected.
EXIT_DOES_NOT_FIT = 1
EXIT_INVALID_INPUT = 2
EXIT_MISMATCH = 3


class DeployProcessError(ECSError, RuntimeError):
    """An ecs-deploy command could not be started or failed."""

    def __init__(self, message: str, *, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


@dataclass
class DeployResult:
    """A finished ecs-deploy command: its arguments, exit code and, when captured, its output."""

    args: list[str]
    returncode: int
    stdout: str = ""
    stderr: str = ""


def deploy_command() -> list[str]:
    """Return the command that starts ecs-deploy.

    ``ECS_DEPLOY_COMMAND`` (split like a shell command line) comes first, so
    that ecs-deploy may live in another environment; otherwise the current
    interpreter runs ``python -m ecs_deploy``.
    """
    configured = os.environ.get(DEPLOY_COMMAND_ENV, "").strip()
    if configured:
        return shlex.split(configured)
    return [sys.executable, "-m", "ecs_deploy"]


def run_deploy(
    arguments: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    command: Sequence[str] | None = None,
    capture: bool = False,
    allowed: Sequence[int] = (0,),
) -> DeployResult:
    """Run ``ecs-deploy ARGUMENTS`` in folder ``cwd`` and return its result.

    Without ``capture`` the process writes to this process's terminal, so
    its tables and progress bars show. Raises :class:`DeployProcessError`
    when the command cannot start or exits with a code not in ``allowed``.
    With ``capture`` the error message ends with the last lines of its error output.
    """
    args = [*(command or deploy_command()), *arguments]
    logger.info("running %s in %s", shlex.join(args), cwd)
    try:
        completed = subprocess.run(
            args, cwd=Path(cwd), capture_output=capture, text=True, check=False, stdin=subprocess.DEVNULL
        )
    except OSError as error:
        raise DeployProcessError(
            f"cannot start ecs-deploy ({shlex.join(args)}): {error}; install ecs-deploy in this environment or set "
            f"{DEPLOY_COMMAND_ENV} to its command"
        ) from error

    result = DeployResult(args, completed.returncode, completed.stdout or "", completed.stderr or "")
    if completed.returncode not in allowed:
        tail = " ".join(result.stderr.strip().splitlines()[-3:]) if capture else "see its output above"
        raise DeployProcessError(
            f"'ecs-deploy {' '.join(arguments)}' failed with exit code {completed.returncode}: {tail}",
            returncode=completed.returncode,
        )
    return result


def leading_json(text: str, source: str) -> Any:
    """Parse the JSON document at the start of ``text`` (a command may print a status line after it)."""
    try:
        value, _ = json.JSONDecoder().raw_decode(text.lstrip())
    except json.JSONDecodeError as error:
        raise DeployProcessError(f"{source} did not print JSON ({error}); got {text[:200]!r}") from error
    return value
