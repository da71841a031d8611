"""The SDK against a real daemon (root; DELTABOX_BIN names the binary, DELTABOX_SOCKET
and DELTABOX_ROOT a private daemon that the first Client starts)."""
import asyncio
import subprocess
import sys
import textwrap
import time
import unittest

from daemon_case import DaemonCase

import deltabox
from deltabox import Client


class SDK(DaemonCase):
    def test_exec_checkpoint_restore_diff(self):
        with self.client.create() as box:
            r = box.exec("mkdir -p /srv/sdk && cd /srv/sdk && echo hi > f && x=41")
            self.assertTrue(r.ok)
            self.assertGreater(r.duration, 0)
            ck = box.checkpoint(label="start")
            self.assertTrue(ck.id.startswith("ck-") and ck.ms > 0)
            box.exec("rm -rf /srv/sdk/*; echo bye > /srv/sdk/g; x=0; cd /")
            ck2 = box.checkpoint()
            self.assertGreater(box.restore(ck), 0)
            self.assertEqual(box.exec("echo $x; pwd; ls /srv/sdk").stdout, "41\n/srv/sdk\nf\n")
            d = box.diff(ck, ck2)
            self.assertEqual(sorted((c.change, c.path) for c in d.changes),
                             [("added", "/srv/sdk/g"), ("deleted", "/srv/sdk/f")])
            self.assertIn("+bye", d.patch)
            self.assertEqual(box.exec("exit 3").exit_code, 3)
            t = box.exec("sleep 5", timeout=0.3)
            self.assertTrue(t.timed_out)
            self.assertEqual(t.exit_code, 124)
            self.assertEqual([n["id"] for n in box.tree()], [ck.id, ck2.id])
            with self.assertRaises(deltabox.NotFound):
                box.restore("ck-000000000000")

    def test_python_session_heap_is_restored(self):
        with self.client.create(shell="python") as box:
            box.exec("big = list(range(10**6)); x = 41")
            ck = box.checkpoint()
            box.exec("x = 0; big.clear()")
            box.restore(ck)
            self.assertEqual(box.exec("x, len(big)").stdout, "(41, 1000000)\n")
            box.exec("import threading; ev = threading.Event(); t = threading.Thread(target=ev.wait); t.start()")
            with self.assertRaises(deltabox.NotCapturable) as e:
                box.checkpoint()
            self.assertIn("threads", str(e.exception))
            self.assertEqual(e.exception.code, "not_capturable")
            box.exec("ev.set(); t.join()")
            box.checkpoint()

    def test_context_manager_and_close_remove_sandboxes(self):
        with self.client.create() as box:
            sid = box.id
        with self.assertRaises(deltabox.NotFound):
            self.client.sandbox(sid)
        c = Client()
        b = c.create()
        kept = c.create(keep=True)
        c.close()
        with self.assertRaises(deltabox.NotFound):
            self.client.sandbox(b.id)
        self.client.sandbox(kept.id).remove()

    def test_a_dying_script_leaves_nothing(self):
        script = textwrap.dedent("""
            import deltabox
            box = deltabox.Client().create()
            print(box.id, flush=True)
            raise SystemExit("the agent crashed")
        """)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        self.assertNotEqual(out.returncode, 0)
        sid = out.stdout.strip()
        self.assertTrue(sid.startswith("sb-"), out.stderr)
        with self.assertRaises(deltabox.NotFound):
            self.client.sandbox(sid)

    def test_a_sigkilled_script_leaves_nothing(self):
        # No atexit runs on SIGKILL: the daemon's lease on the script's pid removes it.
        script = textwrap.dedent("""
            import os, signal, deltabox
            box = deltabox.Client().create()
            box.exec("echo busy > /tmp/x")
            print(box.id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        self.assertEqual(out.returncode, -9, out.stderr)
        sid = out.stdout.strip()
        self.assertTrue(sid.startswith("sb-"), out.stderr)
        until = time.monotonic() + 15
        while any(b.id == sid for b in self.client.sandboxes()):
            self.assertLess(time.monotonic(), until, "the daemon kept a dead script's sandbox")
            time.sleep(0.1)
        with self.assertRaises(deltabox.NotFound):
            self.client.sandbox(sid)

    def test_fork_children_start_at_the_checkpoint(self):
        with self.client.create() as box:
            box.exec("mkdir -p /srv/k && cd /srv/k && echo base > f && v=1")
            ck = box.checkpoint()
            box.exec("v=2; echo later > f")
            kids = ck.fork(3)
            self.assertEqual(len({k.id for k in kids}), 3)
            for i, k in enumerate(kids):
                self.assertEqual(k.exec("echo $v; cat f").stdout, "1\nbase\n")
                k.exec(f"echo kid{i} > f")
            self.assertEqual([k.exec("cat f").stdout for k in kids], ["kid0\n", "kid1\n", "kid2\n"])
            self.assertEqual(box.exec("cat f").stdout, "later\n")
            # A child is a full sandbox: checkpoint, restore, fork again.
            ck2 = kids[0].checkpoint()
            grand = ck2.fork(1)[0]
            self.assertEqual(grand.exec("cat f").stdout, "kid0\n")
            self.assertGreaterEqual(ck.pool(0), 0)

    def test_async_client(self):
        async def main():
            async with deltabox.AsyncClient() as c:
                async with await c.create() as box:
                    await box.exec("echo one > /tmp/a")
                    ck = await box.checkpoint()
                    await box.exec("echo two > /tmp/a")
                    await box.restore(ck)
                    return (await box.exec("cat /tmp/a")).stdout
        self.assertEqual(asyncio.run(main()), "one\n")


if __name__ == "__main__":
    unittest.main()
