"""mini-swe-agent's environment tests (tests/environments/test_local.py and the env parts
of test_docker.py upstream), ported to DeltaboxEnvironment, then its DefaultAgent driven
by its DeterministicModel inside a sandbox, with checkpoint/restore between runs.

Differences from the local environment, by design: actions run inside the sandbox (paths
are the sandbox's: a host temp dir is not there, and writes do not reach the host) and
the default cwd is / (as in the docker environment)."""
import os
import unittest
from pathlib import Path
from unittest.mock import patch

import yaml
import minisweagent
from minisweagent.agents.default import DefaultAgent
from minisweagent.environments import get_environment
from minisweagent.models.test_models import DeterministicModel, make_output

from daemon_case import DaemonCase
from deltabox.mini_swe_agent import DeltaboxEnvironment, DeltaboxEnvironmentConfig


class Environment(DaemonCase):
    def env(self, **kw):
        e = DeltaboxEnvironment(client=self.client, **kw)
        self.addCleanup(e.cleanup)
        return e

    def test_config_defaults(self):
        c = DeltaboxEnvironmentConfig()
        self.assertEqual((c.cwd, c.env, c.forward_env, c.timeout), ("/", {}, [], 30))

    def test_basic_execution(self):
        r = self.env().execute({"command": "echo 'hello world'"})
        self.assertEqual(r["returncode"], 0)
        self.assertIn("hello world", r["output"])
        self.assertEqual(r["exception_info"], "")

    def test_set_env_variables(self):
        e = self.env(env={"TEST_VAR": "test_value", "ANOTHER_VAR": "another_value"})
        self.assertIn("test_value", e.execute({"command": "echo $TEST_VAR"})["output"])
        r = e.execute({"command": "echo $TEST_VAR $ANOTHER_VAR"})
        self.assertEqual(r["returncode"], 0)
        self.assertIn("test_value another_value", r["output"])

    def test_forward_env_and_override(self):
        with patch.dict(os.environ, {"HOST_VAR": "from_host", "CONFLICT_VAR": "from_host"}):
            e = self.env(env={"SET_VAR": "from_config", "CONFLICT_VAR": "from_config"},
                         forward_env=["HOST_VAR", "CONFLICT_VAR", "NONEXISTENT_VAR"])
            r = e.execute({"command": 'echo $SET_VAR $HOST_VAR $CONFLICT_VAR "[$NONEXISTENT_VAR]"'})
        self.assertEqual(r["output"], "from_config from_host from_config []\n")

    def test_host_environment_does_not_leak_in(self):
        with patch.dict(os.environ, {"EXISTING_VAR": "existing_value"}):
            r = self.env().execute({"command": 'echo "[$EXISTING_VAR]"'})
        self.assertEqual(r["output"], "[]\n")

    def test_cwd_config_and_parameter_override(self):
        e = self.env(cwd="/tmp")
        self.assertEqual(e.execute({"command": "pwd"})["output"], "/tmp\n")
        self.assertEqual(e.execute({"command": "pwd"}, cwd="/usr")["output"], "/usr\n")
        self.assertEqual(self.env().execute({"command": "pwd"})["output"], "/\n")
        r = e.execute({"command": "pwd"}, cwd="/no/such/dir")
        self.assertNotEqual(r["returncode"], 0)
        self.assertIn("/no/such/dir", r["output"])

    def test_actions_are_independent_unless_persistent(self):
        e = self.env(cwd="/tmp")
        e.execute({"command": "cd /usr && export X=1 && y=2"})
        self.assertEqual(e.execute({"command": "pwd; echo [$X$y]"})["output"], "/tmp\n[]\n")
        p = self.env(cwd="/tmp", persistent=True)
        p.execute({"command": "cd /usr && export X=1 && y=2"})
        self.assertEqual(p.execute({"command": "pwd; echo [$X$y]"})["output"], "/usr\n[12]\n")
        self.assertEqual(p.execute({"command": "pwd"}, cwd="/etc")["output"], "/etc\n")

    def test_return_codes_failure_and_missing_command(self):
        e = self.env()
        for command, code in [("echo 'test'", 0), ("exit 1", 1), ("exit 42", 42)]:
            self.assertEqual(e.execute({"command": command})["returncode"], code, command)
        r = e.execute({"command": "exit 1"})
        self.assertEqual(r["output"], "")
        r = e.execute({"command": "nonexistent_command_12345"})
        self.assertNotEqual(r["returncode"], 0)
        self.assertIn("nonexistent_command_12345", r["output"])
        # The sandbox's shell survived every `exit`.
        self.assertEqual(e.execute({"command": "echo alive"})["output"], "alive\n")

    def test_stderr_is_captured_in_order(self):
        r = self.env().execute({"command": "echo one; echo 'error message' >&2; echo three"})
        self.assertEqual(r["returncode"], 0)
        self.assertEqual(r["output"], "one\nerror message\nthree\n")

    def test_timeout_returns_structured_output(self):
        e = self.env(timeout=1)
        r = e.execute({"command": "echo started; sleep 5"})
        self.assertEqual(r["returncode"], -1)
        self.assertIn("timed out", r["exception_info"])
        self.assertEqual(r["extra"]["exception_type"], "TimeoutExpired")
        self.assertIn("started", r["output"])
        self.assertEqual(e.execute({"command": "echo ok"}, timeout=5)["output"], "ok\n")
        self.assertEqual(self.env(timeout=5).config.timeout, 5)

    def test_multiline_output_and_shell_features(self):
        e = self.env()
        lines = e.execute({"command": "echo -e 'line1\\nline2\\nline3'"})["output"].strip().split("\n")
        self.assertEqual(lines, ["line1", "line2", "line3"])
        self.assertIn("hello world", e.execute({"command": "echo 'hello world' | grep 'world'"})["output"])
        self.assertIn("nested", e.execute({"command": "echo $(echo 'nested')"})["output"])

    def test_file_operations_stay_in_the_sandbox(self):
        e = self.env(cwd="/tmp")
        name = f"mini-{os.getpid()}.txt"
        self.assertEqual(e.execute({"command": f"echo 'test content' > {name}"})["returncode"], 0)
        self.assertIn("test content", e.execute({"command": f"cat {name}"})["output"])
        self.assertFalse(Path("/tmp", name).exists(), "a sandbox write reached the host")

    def test_submit_marker_raises_submitted(self):
        e = self.env()
        with self.assertRaises(minisweagent.exceptions.Submitted) as cm:
            e.execute({"command": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT; echo the patch"})
        self.assertEqual(cm.exception.messages[0]["extra"]["submission"], "the patch\n")
        # Not on a failing command, nor when the marker is not the first line.
        e.execute({"command": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT; exit 3"})
        e.execute({"command": "echo x; echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"})

    def test_template_vars_and_serialize(self):
        e = self.env(env={"A": "1"})
        v = e.get_template_vars(extra="x")
        self.assertEqual((v["A"], v["extra"], v["cwd"]), ("1", "x", "/"))
        for key in ("system", "release", "version", "machine"):
            self.assertTrue(v[key], key)
        s = e.serialize()["info"]
        self.assertEqual(s["config"]["environment_type"], "deltabox.mini_swe_agent.DeltaboxEnvironment")
        self.assertEqual(s["deltabox"]["sandbox"], e.box.id)

    def test_get_environment_builds_it_from_a_config(self):
        e = get_environment({"environment_class": "deltabox.mini_swe_agent.DeltaboxEnvironment", "cwd": "/tmp"})
        self.addCleanup(e.cleanup)
        self.assertEqual(e.execute({"command": "pwd"})["output"], "/tmp\n")


class Agent(DaemonCase):
    def test_default_agent_runs_in_a_sandbox_and_restores_between_attempts(self):
        config = yaml.safe_load((Path(minisweagent.__file__).parent / "config/mini.yaml").read_text())
        config["agent"]["cost_limit"] = 0  # the deterministic model bills 1.0 per call
        env = DeltaboxEnvironment(client=self.client, cwd="/srv/app")
        self.addCleanup(env.cleanup)
        env.box.exec("mkdir -p /srv/app && printf 'def add(a, b):\\n    return a - b\\n' > /srv/app/calc.py")
        start = env.checkpoint()

        def attempt(edit):
            model = DeterministicModel(outputs=[
                make_output("look", [{"command": "cat calc.py"}]),
                make_output("edit", [{"command": edit}]),
                make_output("test", [{"command": "python3 -c 'import calc; assert calc.add(2, 3) == 5'"}]),
                make_output("submit", [{"command": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT; cat calc.py"}]),
            ])
            agent = DefaultAgent(model, env, **config["agent"])
            info = agent.run("make add() add")
            observations = [m["content"] for m in agent.messages if m.get("role") == "user"]
            return info, observations

        info, obs = attempt("sed -i 's/a - b/a * b/' calc.py")
        self.assertEqual(info["exit_status"], "Submitted")
        self.assertIn("a * b", info["submission"])
        self.assertTrue(any("AssertionError" in o for o in obs), obs)
        self.assertEqual(env.restore(start) > 0, True)
        self.assertIn("a - b", env.execute({"command": "cat calc.py"})["output"])
        info, obs = attempt("sed -i 's/a - b/a + b/' calc.py")
        self.assertIn("a + b", info["submission"])
        self.assertFalse(any("AssertionError" in o for o in obs), obs)
        traj = DefaultAgent(DeterministicModel(outputs=[]), env, **config["agent"]).serialize()
        self.assertEqual(traj["info"]["deltabox"]["sandbox"], env.box.id)


if __name__ == "__main__":
    unittest.main()
