"""Search driver and gym env against a real daemon: a scripted policy on a small puzzle
(reach 10 from 1 with +1, *2, -1 on a number kept in a file and in a shell variable)."""
import unittest

from daemon_case import DaemonCase

from deltabox import MCTS, BestFirst, SandboxEnv, tree_text

ACTIONS = {
    "inc": "n=$(cat /srv/p/n); echo $((n+1)) > /srv/p/n; v=$((v+1))",
    "dbl": "n=$(cat /srv/p/n); echo $((n*2)) > /srv/p/n; v=$((v+1))",
    "dec": "n=$(cat /srv/p/n); echo $((n-1)) > /srv/p/n; v=$((v+1))",
}
SEEN = {}


def propose(node, box):
    return list(ACTIONS.values()) if node.depth < 6 else []


def evaluate(node, box, result):
    n = int(box.exec("cat /srv/p/n").stdout)
    # What this node's state is, to check restores against later (file + shell variable).
    SEEN[id(node)] = box.exec("echo $(cat /srv/p/n) $v").stdout
    return -abs(10 - n)


class Searches(DaemonCase):
    def run_search(self, kind):
        with self.client.create() as box:
            box.exec("mkdir -p /srv/p && echo 1 > /srv/p/n && v=0")
            s = kind(box, propose, evaluate, goal=0)
            best = s.run(max_expansions=60)
            self.assertEqual(best.score, 0, tree_text(s.root))
            box.restore(best.checkpoint)
            self.assertEqual(box.exec("cat /srv/p/n").stdout, "10\n")
            self.assertEqual(len(best.path()), best.depth)
            # Every node still held restores to exactly its state; released ones are gone.
            held = [n for n in s.nodes if not n.released and n.action is not None]
            for n in held[:12]:
                box.restore(n.checkpoint)
                self.assertEqual(box.exec("echo $(cat /srv/p/n) $v").stdout, SEEN[id(n)])
            removed = {c["id"] for c in box.tree() if c["removed"]}
            self.assertEqual(removed, {n.checkpoint.id for n in s.nodes if n.released})
            self.assertGreater(s.stats.rollbacks, 0)
            self.assertEqual(s.stats.checkpoints, len(s.nodes))
            self.assertIn("score 0.00", tree_text(s.root))
            return s

    def test_best_first_finds_the_goal_and_releases_exhausted_nodes(self):
        s = self.run_search(BestFirst)
        self.assertGreater(s.stats.released, 0)

    def test_mcts_finds_the_goal(self):
        self.run_search(MCTS)

    def test_gym_env_resets_by_restore(self):
        with self.client.create() as box:
            box.exec("mkdir -p /srv/p && echo 1 > /srv/p/n && v=0")

            def reward(b, result):
                n = int(b.exec("cat /srv/p/n").stdout)
                return float(-abs(10 - n)), n == 10

            env = SandboxEnv(box, reward, max_steps=5)
            for _ in range(3):
                obs, info = env.reset()
                self.assertGreater(info["restore_ms"], 0)
                self.assertEqual(box.exec("echo $(cat /srv/p/n) $v").stdout, "1 0\n")
                total, done = 0.0, False
                for a in ("dbl", "dbl", "inc", "dbl"):
                    obs, r, done, truncated, info = env.step(ACTIONS[a])
                    total += r
                self.assertTrue(done)
                self.assertEqual(total, -8 - 6 - 5 - 0)


if __name__ == "__main__":
    unittest.main()
