"""A gymnasium-style environment over a sandbox, for RL loops: reset() restores a start
checkpoint (milliseconds, files and shell state), step(action) runs a command.

Duck-typed to gymnasium's Env API (reset -> (obs, info); step -> (obs, reward,
terminated, truncated, info)) without depending on gymnasium."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

from .client import Checkpoint, Result, Sandbox

Reward = Callable[[Sandbox, Result], Tuple[float, bool]]


class SandboxEnv:
    """`reward(box, result) -> (reward, terminated)` scores each step."""

    def __init__(
        self,
        box: Sandbox,
        reward: Reward,
        start: Optional[Checkpoint] = None,
        max_steps: int = 50,
        step_timeout: Optional[float] = None,
    ):
        self.box, self.reward, self.max_steps = box, reward, max_steps
        self.step_timeout = step_timeout
        self.start = start or box.checkpoint(label="env-start")
        self.steps = 0

    def reset(self, seed: Optional[int] = None, options: Optional[Dict[str, Any]] = None):
        ms = self.box.restore(self.start)
        self.steps = 0
        return "", {"restore_ms": ms}

    def step(self, action: str):
        result = self.box.exec(action, timeout=self.step_timeout)
        self.steps += 1
        reward, terminated = self.reward(self.box, result)
        truncated = not terminated and self.steps >= self.max_steps
        obs = result.stdout + result.stderr
        return obs, reward, terminated, truncated, {"exit_code": result.exit_code, "duration": result.duration}

    def close(self) -> None:
        pass
