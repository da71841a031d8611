"""A mini-swe-agent (https://pypi.org/project/mini-swe-agent) environment that runs the
agent's actions in a DeltaBox sandbox, with checkpoint/restore on top.

    from minisweagent.agents.default import DefaultAgent
    from deltabox.mini_swe_agent import DeltaboxEnvironment

    env = DeltaboxEnvironment(cwd="/work", env={"PAGER": "cat"})
    agent = DefaultAgent(model, env, **config["agent"])
    start = env.checkpoint()
    agent.run(task)           # try once ...
    env.restore(start)        # ... and again from the same files and shell

or, in a mini-swe-agent YAML config:

    environment:
      environment_class: deltabox.mini_swe_agent.DeltaboxEnvironment
      cwd: /work

Like mini-swe-agent's own environments, each action runs on its own (a subshell of the
sandbox's persistent bash: `cd` and `export` do not carry over to the next action) with
stderr merged into stdout; `persistent=True` runs actions in the shell itself instead.
"""
from __future__ import annotations

import os
import platform
import shlex
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

from .client import Checkpoint, CheckpointRef, Client, Sandbox
from .errors import DeltaBoxError

try:
    from minisweagent.exceptions import Submitted
except ImportError as e:  # pragma: no cover - exercised only without mini-swe-agent
    raise ImportError(
        "deltabox.mini_swe_agent needs mini-swe-agent: pip install mini-swe-agent"
    ) from e

SUBMIT_MARKER = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"


@dataclass
class DeltaboxEnvironmentConfig:
    cwd: str = "/"
    """Directory actions run in (inside the sandbox) unless `execute` is given one."""
    env: Dict[str, str] = field(default_factory=dict)
    """Variables set for every action."""
    forward_env: List[str] = field(default_factory=list)
    """Variables copied from the calling process's environment (`env` wins)."""
    timeout: int = 30
    """Seconds an action may run; then it is killed (the sandbox's shell survives)."""
    base: Optional[str] = None
    """Root filesystem of a new sandbox (default: the host's root, read-only)."""
    net: bool = False
    sandbox_id: Optional[str] = None
    """Attach to this existing sandbox instead of creating one (it is not removed)."""
    persistent: bool = False
    """Run actions in the persistent shell itself, so cd/export/variables carry over."""
    socket: Optional[str] = None

    def model_dump(self, mode: str = "python") -> Dict[str, Any]:
        return asdict(self)


def _merge(*dicts: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, dict) and isinstance(out.get(k), dict):
                out[k] = _merge(out[k], v)
            else:
                out[k] = v
    return out


class DeltaboxEnvironment:
    def __init__(self, *, config_class: type = DeltaboxEnvironmentConfig, client: Optional[Client] = None, **kwargs: Any):
        self.config = config_class(**kwargs)
        self.client = client or Client(socket=self.config.socket)
        if self.config.sandbox_id:
            self.box: Sandbox = self.client.sandbox(self.config.sandbox_id)
            self._owned = False
        else:
            self.box = self.client.create(base=self.config.base, net=self.config.net)
            self._owned = True
        self._uname: Optional[Dict[str, str]] = None
        self._started = False

    # -- the mini-swe-agent Environment protocol ------------------------------------------
    def execute(self, action: dict, cwd: str = "", *, timeout: Optional[int] = None) -> Dict[str, Any]:
        """Runs action["command"]; returns {"output", "returncode", "exception_info"}.
        Raises Submitted when the output's first line is the submit marker."""
        command = action.get("command", "")
        timeout = timeout or self.config.timeout
        if not (self.config.persistent and self._started):
            # (a persistent shell stays where the previous action left it, unless told)
            cwd = cwd or self.config.cwd
        script = self._script(command, cwd)
        try:
            r = self.box.exec(script, timeout=timeout)
        except DeltaBoxError as e:
            output = self._failure("", e, type(e).__name__)
        else:
            if r.timed_out:
                e = subprocess.TimeoutExpired(command, timeout)
                output = self._failure(r.stdout, e, type(e).__name__)
            else:
                output = {"output": r.stdout, "returncode": r.exit_code, "exception_info": ""}
        self._check_finished(output)
        return output

    def get_template_vars(self, **kwargs: Any) -> Dict[str, Any]:
        return _merge(self.config.model_dump(), self._platform(), self._env(), kwargs)

    def serialize(self) -> Dict[str, Any]:
        return {
            "info": {
                "config": {
                    "environment": self.config.model_dump(mode="json"),
                    "environment_type": f"{self.__class__.__module__}.{self.__class__.__name__}",
                },
                "deltabox": {"sandbox": self.box.id},
            }
        }

    def cleanup(self) -> None:
        """Removes the sandbox (unless it was attached with sandbox_id)."""
        if self._owned:
            self._owned = False
            try:
                self.box.remove()
            except DeltaBoxError:
                pass

    # -- what DeltaBox adds -----------------------------------------------------------------
    def checkpoint(self, label: Optional[str] = None) -> Checkpoint:
        """Files and shell, now (a few milliseconds)."""
        return self.box.checkpoint(label)

    def restore(self, ck: CheckpointRef) -> float:
        """Back to `ck`: files and shell; returns milliseconds."""
        return self.box.restore(ck)

    def __enter__(self) -> "DeltaboxEnvironment":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()

    # -- internals ----------------------------------------------------------------------------
    def _script(self, command: str, cwd: str) -> str:
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self._env().items())
        if self.config.persistent:
            # In the shell itself, where a failed cd must not end the shell.
            cd = f"cd -- {shlex.quote(cwd)} && " if cwd else ""
            self._started = True
            return f"{exports}{cd}{{\n{command}\n}} 2>&1"
        return f"(\nexec 2>&1\ncd -- {shlex.quote(cwd)} || exit\n{exports}{command}\n)"

    @staticmethod
    def _failure(out: str, e: BaseException, kind: str) -> Dict[str, Any]:
        return {
            "output": out,
            "returncode": -1,
            "exception_info": f"An error occurred while executing the command: {e}",
            "extra": {"exception_type": kind, "exception": str(e)},
        }

    @staticmethod
    def _check_finished(output: Dict[str, Any]) -> None:
        lines = output.get("output", "").lstrip().splitlines(keepends=True)
        if lines and lines[0].strip() == SUBMIT_MARKER and output["returncode"] == 0:
            submission = "".join(lines[1:])
            raise Submitted(
                {
                    "role": "exit",
                    "content": submission,
                    "extra": {"exit_status": "Submitted", "submission": submission},
                }
            )

    def _platform(self) -> Dict[str, str]:
        if self._uname is None:
            # The sandbox runs the host's kernel under its own hostname.
            u = platform.uname()._asdict()
            r = self.box.exec("uname -n", timeout=10)
            if r.ok:
                u["node"] = r.stdout.strip()
            self._uname = u
        return self._uname

    def _env(self) -> Dict[str, str]:
        env = {k: os.environ[k] for k in self.config.forward_env if k in os.environ}
        env.update(self.config.env)
        return env


__all__ = ["DeltaboxEnvironment", "DeltaboxEnvironmentConfig", "SUBMIT_MARKER"]
