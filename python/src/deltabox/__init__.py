"""DeltaBox: millisecond checkpoint, rollback of AI-agent sandboxes (files + processes)."""
from .aio import AsyncClient, AsyncSandbox
from .client import Change, Checkpoint, Client, Diff, Result, Sandbox
from .gym import SandboxEnv
from .search import MCTS, BestFirst, Node, Search, tree_text
from .errors import (
    BadRequest,
    Busy,
    DaemonUnavailable,
    Dead,
    DeltaBoxError,
    NoSpace,
    NotCapturable,
    NotFound,
    NoTemplate,
    Removed,
)

__all__ = [
    "MCTS", "BestFirst", "Node", "Search", "SandboxEnv", "tree_text",
    "AsyncClient", "AsyncSandbox", "BadRequest", "Busy", "Change", "Checkpoint", "Client",
    "DaemonUnavailable", "Dead", "DeltaBoxError", "Diff", "NoSpace", "NotCapturable",
    "NotFound", "NoTemplate", "Removed", "Result", "Sandbox",
]
__version__ = "0.1.0"
