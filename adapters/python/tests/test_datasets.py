"""Dataset builders: fresh seeds per (profile, epoch), and rows each engine's adapter reads."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import unittest

from server import REPO_ROOT, Service
from therapygym_adapters._common import parse_task
from therapygym_adapters.client import TherapyGymClient
from therapygym_adapters.datasets import expand_tasks, main, read_profile_ids


class DatasetTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.svc = Service("--turns", "4").start()

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def test_groups_never_repeat(self):
        ids = read_profile_ids(REPO_ROOT / "data" / "profiles" / "examples.jsonl")
        self.assertGreaterEqual(len(ids), 24)
        tasks = expand_tasks(ids, epochs=3, base_seed=1000)
        self.assertEqual(len(tasks), 3 * len(ids))
        self.assertEqual(len({t.group for t in tasks}), len(tasks))
        self.assertEqual(len({t.seed for t in tasks}), len(tasks))

    def build(self, *args: str) -> list[dict]:
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "rows.json")
            with contextlib.redirect_stdout(io.StringIO()):
                self.assertEqual(main([*args, "--url", self.svc.url, "--out", out]), 0)
            with open(out, encoding="utf-8") as f:
                return [json.loads(line) for line in f]

    def test_verl_rows_carry_the_service_prompt_and_interaction_kwargs(self):
        rows = self.build("--engine", "verl", "--profile-ids", "tg-001", "tg-002", "--epochs", "2", "--seed", "7")
        self.assertEqual(len(rows), 4)
        client = TherapyGymClient(self.svc.url)
        ref = client.create_episode("tg-001", 7, episode_id="ds-ref", group_id="ds-ref")["messages"]
        client.delete_episode("ds-ref")
        for i, row in enumerate(rows):
            self.assertEqual(row["prompt"], [{"role": m["role"], "content": m["content"]} for m in ref])
            self.assertEqual(row["agent_name"], "tool_agent")
            self.assertIn("ground_truth", row["reward_model"])
            ik = row["extra_info"]["interaction_kwargs"]
            self.assertEqual(ik["name"], "therapy")
            self.assertEqual(parse_task(ik).group, f"{ik['profile_id']}:{ik['seed']}")
        self.assertEqual([r["extra_info"]["interaction_kwargs"]["seed"] for r in rows], [7, 8, 9, 10])

    def test_verl_rows_with_a_patient_opening_are_read_per_task(self):
        rows = self.build("--engine", "verl", "--profile-ids", "tg-003", "tg-004", "--opening", "patient")
        for row in rows:
            self.assertEqual([m["role"] for m in row["prompt"]], ["system", "user"])
            self.assertEqual(row["extra_info"]["interaction_kwargs"]["opening"], "patient")

    def test_openrlhf_and_trl_rows_hold_the_task(self):
        rows = self.build("--engine", "openrlhf", "--profile-ids", "tg-005", "--split", "train", "--turns", "3")
        self.assertEqual(len(rows), 1)
        t = parse_task(rows[0]["label"])
        self.assertEqual((t.profile_id, t.seed, t.split, dict(t.limits)), ("tg-005", 0, "train", {"max_therapist_turns": 3}))
        rows = self.build("--engine", "trl", "--profile-ids", "tg-005", "tg-006", "--group-size", "1")
        self.assertEqual([parse_task(r["prompt"]).group_size for r in rows], [1, 1])


if __name__ == "__main__":
    unittest.main()
