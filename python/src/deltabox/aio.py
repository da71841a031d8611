"""asyncio flavour of the client: the same calls, run off the event loop's thread."""
from __future__ import annotations

import asyncio
import functools
from typing import Any, List, Optional

from .client import Checkpoint, CheckpointRef, Client, Diff, Result, Sandbox


def _off_loop(fn):
    @functools.wraps(fn)
    async def run(*args: Any, **kw: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kw)

    return run


class AsyncSandbox:
    def __init__(self, box: Sandbox):
        self.sync = box
        self.id = box.id

    async def exec(self, command: str, timeout: Optional[float] = None, max_output: Optional[int] = None) -> Result:
        return await _off_loop(self.sync.exec)(command, timeout, max_output)

    async def checkpoint(self, label: Optional[str] = None) -> Checkpoint:
        return await _off_loop(self.sync.checkpoint)(label)

    async def restore(self, ck: CheckpointRef, files_only: bool = False) -> float:
        return await _off_loop(self.sync.restore)(ck, files_only)

    async def diff(self, a: CheckpointRef, b: CheckpointRef) -> Diff:
        return await _off_loop(self.sync.diff)(a, b)

    async def tree(self) -> List[dict]:
        return await _off_loop(self.sync.tree)()

    async def remove(self) -> None:
        await _off_loop(self.sync.remove)()

    async def __aenter__(self) -> "AsyncSandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            await self.remove()
        except Exception:
            pass


class AsyncClient:
    """`async with AsyncClient() as c: box = await c.create()`."""

    def __init__(self, **kw: Any):
        self._kw = kw
        self.sync: Optional[Client] = None

    async def _client(self) -> Client:
        if self.sync is None:
            self.sync = await asyncio.to_thread(Client, **self._kw)
        return self.sync

    async def create(self, **kw: Any) -> AsyncSandbox:
        c = await self._client()
        return AsyncSandbox(await asyncio.to_thread(c.create, **kw))

    async def close(self) -> None:
        if self.sync is not None:
            await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> "AsyncClient":
        await self._client()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
