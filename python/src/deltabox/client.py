"""DeltaBox client: HTTP/JSON to the daemon over its Unix socket (standard library only).

    from deltabox import Client
    with Client() as client, client.create() as box:
        box.exec("cd /work && git status")
        ck = box.checkpoint()
        box.exec("rm -rf /work/*")
        box.restore(ck)
"""
from __future__ import annotations

import atexit
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

from .errors import DaemonUnavailable, DeltaBoxError, from_response

DEFAULT_SOCKET = "/run/deltabox/deltabox.sock"
_DAEMONS: list = []


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: Optional[float]):
        super().__init__("deltabox", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self._path)
        except BaseException:
            s.close()
            raise
        self.sock = s


@dataclass
class Result:
    """What one `exec` did. `duration` is in seconds."""

    stdout: str
    stderr: str
    exit_code: int
    duration: float
    timed_out: bool = False
    truncated: bool = False
    shell_restarted: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass
class Change:
    path: str
    change: str  # added, deleted, modified
    kind: str  # file, dir, symlink, other
    what: List[str] = field(default_factory=list)


@dataclass
class Diff:
    changes: List[Change]
    patch: Optional[str]


class Checkpoint:
    """A node of a sandbox's checkpoint tree (files + the shell's process)."""

    def __init__(self, box: "Sandbox", data: Dict[str, Any]):
        self.box = box
        self.id: str = data["id"]
        self.parent: Optional[str] = data.get("parent")
        self.ms: float = data.get("ms", 0.0)

    def remove(self) -> None:
        """Release it (its process template and, at the next gc, its layers)."""
        self.box.client._call("DELETE", f"/v1/checkpoints/{self.id}")

    def fork(self, n: int = 1, keep: bool = False) -> List["Sandbox"]:
        """`n` new sandboxes that start exactly here (files and shell), each isolated in
        its own namespaces; like `Client.create`, they are leased to this process and
        removed with the client unless `keep`."""
        client = self.box.client
        body = client._leased({"n": n}, keep, None)
        r = client._call("POST", f"/v1/checkpoints/{self.id}/fork", body)
        return [client._own(Sandbox(client, {"id": i, "shell": self.box.shell}), keep) for i in r["ids"]]

    def pool(self, size: int) -> int:
        """Keep `size` children pre-forked so that `fork` hands them out at once (0 empties
        the pool); returns how many are ready now."""
        return self.box.client._call("POST", f"/v1/checkpoints/{self.id}/pool", {"size": size})["ready"]

    def __repr__(self) -> str:
        return f"Checkpoint({self.id!r})"


CheckpointRef = Union[Checkpoint, str]


def _ck_id(ck: CheckpointRef) -> str:
    return ck.id if isinstance(ck, Checkpoint) else ck


class Sandbox:
    """One sandbox. As a context manager it is removed on exit."""

    def __init__(self, client: "Client", data: Dict[str, Any]):
        self.client = client
        self.id: str = data["id"]
        self.shell: str = data.get("shell", "bash")

    def exec(
        self,
        command: str,
        timeout: Optional[float] = None,
        max_output: Optional[int] = None,
    ) -> Result:
        """Runs `command` in the persistent shell (bash, or Python source for a
        python sandbox). A failing command is a Result with exit_code != 0, not an
        exception; a timeout kills the command (exit code 124), not the shell."""
        req: Dict[str, Any] = {"command": command}
        if timeout is not None:
            req["timeout_ms"] = int(timeout * 1000)
        if max_output is not None:
            req["max_output_bytes"] = max_output
        r = self.client._call("POST", f"/v1/sandboxes/{self.id}/exec", req)
        return Result(
            stdout=r["stdout"],
            stderr=r["stderr"],
            exit_code=r["exit_code"],
            duration=r["duration_ms"] / 1000.0,
            timed_out=r["timed_out"],
            truncated=r["truncated"],
            shell_restarted=r["shell_restarted"],
        )

    def checkpoint(self, label: Optional[str] = None) -> Checkpoint:
        body = {"label": label} if label else {}
        return Checkpoint(self, self.client._call("POST", f"/v1/sandboxes/{self.id}/checkpoints", body))

    def restore(self, ck: CheckpointRef, files_only: bool = False) -> float:
        """Brings files and shell back to `ck`; returns the milliseconds it took."""
        r = self.client._call(
            "POST",
            f"/v1/sandboxes/{self.id}/restore",
            {"checkpoint": _ck_id(ck), "files_only": files_only},
        )
        return r["ms"]

    def diff(self, a: CheckpointRef, b: CheckpointRef) -> Diff:
        return self.client.diff(a, b)

    def tree(self) -> List[Dict[str, Any]]:
        return self.client._call("GET", f"/v1/sandboxes/{self.id}/tree")

    def info(self) -> Dict[str, Any]:
        return self.client._call("GET", f"/v1/sandboxes/{self.id}")

    def remove(self) -> None:
        self.client._call("DELETE", f"/v1/sandboxes/{self.id}")
        self.client._owned.discard(self.id)

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.remove()
        except DeltaBoxError:
            pass

    def __repr__(self) -> str:
        return f"Sandbox({self.id!r})"


def _remove_all(socket_path: str, ids: set) -> None:
    for sid in list(ids):
        try:
            Client._request(socket_path, "DELETE", f"/v1/sandboxes/{sid}", None, 30.0)
        except Exception:
            pass


class Client:
    """Connects to the daemon on `socket` (DELTABOX_SOCKET, default
    /run/deltabox/deltabox.sock), starting one (`deltabox daemon`) if none answers.

    Sandboxes created through a client are removed when the client closes, or when the
    interpreter exits (atexit), unless `keep=True` was given to `create`. They are also
    leased to this process: if it dies without cleaning up (SIGKILL, OOM), the daemon
    removes them within a second."""

    def __init__(
        self,
        socket: Optional[str] = None,
        start: bool = True,
        binary: Optional[str] = None,
        timeout: float = 3600.0,
    ):
        self.socket = socket or os.environ.get("DELTABOX_SOCKET", DEFAULT_SOCKET)
        self.timeout = timeout
        self._owned: set = set()
        self._finalizer = weakref.finalize(self, _remove_all, self.socket, self._owned)
        atexit.register(self._finalizer)
        if not self._alive():
            if not start:
                raise DaemonUnavailable(f"no DeltaBox daemon answers on {self.socket}", "unavailable")
            self._start_daemon(binary)

    # -- transport --------------------------------------------------------------------
    @staticmethod
    def _request(path: str, method: str, url: str, body: Any, timeout: float) -> Any:
        conn = _UnixConnection(path, timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"content-type": "application/json"} if data is not None else {}
            conn.request(method, url, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            parsed = json.loads(raw) if raw else None
            if resp.status >= 400:
                raise from_response(resp.status, parsed or {})
            return parsed
        finally:
            conn.close()

    def _call(self, method: str, url: str, body: Any = None) -> Any:
        try:
            return self._request(self.socket, method, url, body, self.timeout)
        except (ConnectionRefusedError, FileNotFoundError) as e:
            raise DaemonUnavailable(
                f"the DeltaBox daemon on {self.socket} is gone ({e}); start it with `deltabox daemon`",
                "unavailable",
            ) from e

    def _alive(self) -> bool:
        try:
            self._request(self.socket, "GET", "/v1/health", None, 5.0)
            return True
        except (OSError, DeltaBoxError):
            return False

    def _start_daemon(self, binary: Optional[str]) -> None:
        exe = binary or os.environ.get("DELTABOX_BIN") or shutil.which("deltabox")
        if not exe:
            raise DaemonUnavailable(
                f"no daemon on {self.socket} and no `deltabox` binary to start one "
                "(put it on PATH or set DELTABOX_BIN)",
                "unavailable",
            )
        log_path = os.environ.get("DELTABOX_LOG", "/var/lib/deltabox.log")
        try:
            log = open(log_path, "ab")
        except OSError:
            log = subprocess.DEVNULL
        # The daemon outlives this client (other clients share it): keep the handle so
        # Python does not warn about a child it never waited for.
        _DAEMONS.append(
            subprocess.Popen(
                [exe, "daemon"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=dict(os.environ, DELTABOX_SOCKET=self.socket),
            )
        )
        if log is not subprocess.DEVNULL:
            log.close()
        until = time.monotonic() + 30
        while time.monotonic() < until:
            if self._alive():
                return
            time.sleep(0.05)
        raise DaemonUnavailable(f"started {exe} daemon but it does not answer on {self.socket}; see {log_path}", "unavailable")

    # -- API ----------------------------------------------------------------------------
    def create(
        self,
        base: Optional[str] = None,
        net: bool = False,
        shell: str = "bash",
        keep: bool = False,
        owner_pid: Optional[int] = None,
    ) -> Sandbox:
        """A new sandbox. shell: "bash" or "python" (a REPL whose heap checkpoints keep).
        It lives as long as `owner_pid` (default: this process) unless `keep=True`."""
        body: Dict[str, Any] = {"net": net, "shell": shell}
        if base:
            body["base"] = base
        body = self._leased(body, keep, owner_pid)
        return self._own(Sandbox(self, self._call("POST", "/v1/sandboxes", body)), keep)

    @staticmethod
    def _leased(body: Dict[str, Any], keep: bool, owner_pid: Optional[int]) -> Dict[str, Any]:
        """The request body, leased to `owner_pid` (default: this process unless `keep`)."""
        if owner_pid is not None or not keep:
            body["owner_pid"] = owner_pid if owner_pid is not None else os.getpid()
        return body

    def _own(self, box: Sandbox, keep: bool) -> Sandbox:
        """Removes `box` with this client unless `keep`."""
        if not keep:
            self._owned.add(box.id)
        return box

    def sandbox(self, sandbox_id: str) -> Sandbox:
        return Sandbox(self, self._call("GET", f"/v1/sandboxes/{sandbox_id}"))

    def sandboxes(self) -> List[Sandbox]:
        return [Sandbox(self, s) for s in self._call("GET", "/v1/sandboxes")]

    def diff(self, a: CheckpointRef, b: CheckpointRef) -> Diff:
        r = self._call("GET", f"/v1/diff?from={_ck_id(a)}&to={_ck_id(b)}&patch=true")
        return Diff(
            changes=[Change(c["path"], c["change"], c["kind"], c.get("what", [])) for c in r["changes"]],
            patch=r.get("patch"),
        )

    def health(self) -> Dict[str, Any]:
        return self._call("GET", "/v1/health")

    def gc(self) -> Dict[str, Any]:
        return self._call("POST", "/v1/gc")

    def close(self) -> None:
        """Removes the sandboxes this client created (unless created with keep=True)."""
        self._finalizer()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
