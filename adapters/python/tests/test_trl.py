"""TRL: make_rollout_func with a scripted policy and a fake tokenizer, and reward_func, against a
real service: token layout, env_mask on patient tokens, rewards, None for unscored sessions."""

from __future__ import annotations

import json
import math
import unittest

from fakes import FakeTokenizer, ScriptedPolicy
from server import Service
from therapygym_adapters.client import TherapyGymClient, TherapyGymError
from therapygym_adapters.trl import make_rollout_func, reward_func


def task(profile_id: str, seed: int, **kw) -> str:
    return json.dumps({"profile_id": profile_id, "seed": seed, **kw})


def runs(mask: list[int]) -> list[tuple[int, int, int]]:
    """Maximal runs of equal values: (value, start, end)."""
    out = []
    start = 0
    for i in range(1, len(mask) + 1):
        if i == len(mask) or mask[i] != mask[start]:
            out.append((mask[start], start, i))
            start = i
    return out


class MetricLog:
    def __init__(self):
        self.values = []

    def __call__(self, name, value):
        self.values.append((name, value))


class TRLRolloutTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.svc = Service("--turns", "3").start()
        cls.client = TherapyGymClient(cls.svc.url, max_retries=0)

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def test_rollout_layout_env_mask_and_rewards(self):
        tok = FakeTokenizer("chatml")
        policy = ScriptedPolicy(tok)
        rollout = make_rollout_func(self.client, policy, tok, max_completion_length=4096)
        # As TRL passes them: each prompt num_generations (4) times in a row.
        prompts = [task("tg-001", 501)] * 4 + [task("tg-002", 502)] * 4
        out = rollout(prompts, None)
        for key in ("prompt_ids", "completion_ids", "logprobs", "env_mask", "therapy_reward", "therapy_info"):
            self.assertEqual(len(out[key]), 8, key)
        self.assertEqual(policy.calls, [8, 8, 8])
        eos = tok.eos_token_id
        for i in range(8):
            p, c, lp, m = (out[k][i] for k in ("prompt_ids", "completion_ids", "logprobs", "env_mask"))
            self.assertEqual(len(c), len(lp))
            self.assertEqual(len(c), len(m))
            # The prompt is the service's system prompt in the policy's template.
            text = tok.decode(p)
            self.assertTrue(text.startswith("<|im_start|>system\nYou are a licensed cognitive behavioural therapist"))
            self.assertTrue(text.endswith("<|im_end|>\n<|im_start|>assistant\n"))
            system = text[len("<|im_start|>system\n") : -len("<|im_end|>\n<|im_start|>assistant\n")]
            # env_mask: therapist turns (1) alternate with patient turns (0), and the whole
            # sequence is exactly the chat template's rendering of the conversation.
            segments = runs(m)
            self.assertEqual([v for v, _, _ in segments], [1, 0, 1, 0, 1])
            therapist = []
            for v, a, b in segments:
                seg = tok.decode(c[a:b])
                if v == 1:
                    self.assertTrue(seg.endswith("<|im_end|>"))
                    self.assertEqual(c[b - 1], eos)
                    therapist.append(seg[: -len("<|im_end|>")])
                    self.assertEqual(lp[a:b], [-0.5] * (b - a))
                else:
                    # Patient tokens: the echoing patient repeats the therapist's last turn.
                    self.assertEqual(seg, f"\n<|im_start|>user\n{therapist[-1]}<|im_end|>\n<|im_start|>assistant\n")
                    self.assertEqual(lp[a:b], [0.0] * (b - a))
            msgs = [{"role": "system", "content": system}]
            for k, t in enumerate(therapist):
                msgs.append({"role": "assistant", "content": t})
                if k < 2:
                    msgs.append({"role": "user", "content": t})
            self.assertEqual(tok.decode(p + c), tok.apply_chat_template(msgs, tokenize=False).rstrip("\n"))
            self.assertEqual(c[-1], eos)
            r = out["therapy_reward"][i]
            self.assertIsInstance(r, float)
            self.assertEqual(out["therapy_info"][i]["status"], "scored")
            if i == 0:
                # Scored like the same transcript (closing patient reply included) statelessly.
                transcript = msgs[1:] + [{"role": "user", "content": therapist[-1]}]
                ref = self.client.score([{"messages": transcript, "task": {"profile_id": "tg-001", "seed": 501}}])
                self.assertAlmostEqual(ref[0]["reward"], r, places=12)
            # Closed after the end.
            with self.assertRaises(TherapyGymError):
                self.client.score_episode(out["therapy_info"][i]["episode_id"])
        # Members of a group said different things, so they got their own rewards.
        self.assertGreater(len(set(out["therapy_reward"][:4])), 1)
        log = MetricLog()
        rewards = reward_func(
            prompts=prompts, completions=None, therapy_reward=out["therapy_reward"], log_metric=log
        )
        self.assertEqual(rewards, out["therapy_reward"])
        self.assertEqual(log.values, [("therapygym/unscored", 0.0)])

    def test_completion_budget_reached_before_the_end_is_unscored(self):
        tok = FakeTokenizer("chatml")
        policy = ScriptedPolicy(tok)
        rollout = make_rollout_func(self.client, policy, tok, max_completion_length=150)
        out = rollout([task("tg-003", 503, group_size=1)], None)
        # Each turn asks for what it may still use, not max_completion_length then trims.
        self.assertEqual(policy.max_tokens, [150, 150 - 52 - 71])
        self.assertIsNone(out["therapy_reward"][0])
        self.assertEqual(out["therapy_info"][0]["unscored_reason"], "engine_truncated")
        # Turn 1 (52 tokens) and the patient's reply (71) fit; turn 2 was cut at the budget
        # (posted with finish_reason "length") and the next reply had no room left.
        c, m = out["completion_ids"][0], out["env_mask"][0]
        self.assertEqual([(v, b - a) for v, a, b in runs(m)], [(1, 52), (0, 71), (1, 27)])
        self.assertEqual(len(c), 150)
        self.assertNotEqual(c[-1], tok.eos_token_id)
        g = self.client.group("tg-003:503", group_size=1)
        self.assertEqual([m["status"] for m in g["members"]], ["abandoned"])
        self.assertEqual(g["members"][0]["unscored_reason"], "engine_truncated")

    def test_collective_generate_gets_the_same_batch_every_turn(self):
        tok = FakeTokenizer("chatml")
        prompts = [task("tg-004", 504)] * 2 + [task("tg-005", 505, limits={"max_therapist_turns": 1})] * 2
        plain = ScriptedPolicy(tok)
        out = make_rollout_func(self.client, plain, tok, max_completion_length=4096)(prompts, None)
        self.assertEqual(plain.calls, [4, 2, 2])  # the one-turn rows are done after turn 1
        collective = ScriptedPolicy(tok)
        collective.collective = True  # like TRL's vLLM: every process, same batch, every turn
        out2 = make_rollout_func(self.client, collective, tok, max_completion_length=4096)(
            [task("tg-004", 506)] * 2 + [task("tg-005", 507, limits={"max_therapist_turns": 1})] * 2, None
        )
        self.assertEqual(collective.calls, [4, 4, 4])
        # Finished rows only hold their place in a collective call: a one-token placeholder each.
        self.assertEqual(collective.prompt_lengths[1][2:], [1, 1])
        self.assertGreater(min(collective.prompt_lengths[1][:2]), 1)
        self.assertEqual(collective.max_tokens, [4096] * 3)
        # Plain generate: only the rows still playing, and at most the room they have left.
        self.assertEqual(len(plain.prompt_lengths[1]), 2)
        self.assertEqual(plain.max_tokens[0], 4096)
        self.assertLess(plain.max_tokens[1], 4096)
        for o in (out, out2):
            self.assertTrue(all(isinstance(r, float) for r in o["therapy_reward"]))
            self.assertEqual([len(runs(m)) for m in o["env_mask"]], [5, 5, 1, 1])

    def test_generate_may_return_dicts_without_logprobs(self):
        tok = FakeTokenizer("chatml")
        policy = ScriptedPolicy(tok)

        def generate(batch):
            return [{"completion_ids": ids, "logprobs": None} for ids, _ in policy(batch)]

        out = make_rollout_func(self.client, generate, tok, max_completion_length=4096, max_turns=3)(
            [task("tg-006", 508)], None
        )
        self.assertEqual(out["logprobs"][0], [0.0] * len(out["completion_ids"][0]))
        self.assertIsInstance(out["therapy_reward"][0], float)

    def test_reward_func_needs_the_rollout_column(self):
        with self.assertRaises(ValueError):
            reward_func(prompts=["x"], completions=["y"])


class TRLGroupEndToEndTest(unittest.TestCase):
    """A whole group in one rollout call: one member runs out of max_completion_length before the
    service ends it, the first to finish is unscored, the other two score."""

    @classmethod
    def setUpClass(cls):
        cls.svc = Service("--turns", "3", "--judge-retries", "0", judge="scripted:malformed_json:1").start()

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def test_cut_short_unscored_and_scored_members(self):
        tok = FakeTokenizer("chatml")
        client = TherapyGymClient(self.svc.url, max_retries=0)

        class Wordy(ScriptedPolicy):
            # The fourth row's turns are long: it cannot finish within the budget.
            def __call__(self, batch, max_tokens=None):
                out = super().__call__(batch, None)
                res = []
                for ids, (toks, lps) in zip(batch, out):
                    if "(#4)" in tok.decode(toks):
                        toks = toks[:-1] + tok.encode("z" * 150) + toks[-1:]
                    toks = toks[:max_tokens]
                    res.append((toks, [-0.5] * len(toks)))
                return res

        rollout = make_rollout_func(client, Wordy(tok), tok, max_completion_length=400)
        out = rollout([task("tg-010", 701)] * 4, None)
        rewards, infos = out["therapy_reward"], out["therapy_info"]
        self.assertIsNone(rewards[3])
        self.assertEqual(infos[3]["unscored_reason"], "engine_truncated")
        self.assertEqual(sorted(r is None for r in rewards[:3]), [False, False, True])
        log = MetricLog()
        self.assertEqual(reward_func(therapy_reward=rewards, log_metric=log), rewards)
        self.assertEqual(log.values, [("therapygym/unscored", 0.5)])
        g = client.group("tg-010:701")
        self.assertEqual((g["complete"], g["scored"], g["unscored"], g["abandoned"]), (True, 2, 1, 1))


class TRLUnscoredTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.svc = Service("--turns", "2", "--judge-retries", "0", judge="scripted:malformed_json").start()

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def test_unscored_sessions_give_none(self):
        tok = FakeTokenizer("chatml")
        client = TherapyGymClient(self.svc.url, max_retries=0)
        rollout = make_rollout_func(client, ScriptedPolicy(tok), tok, max_completion_length=4096)
        out = rollout([task("tg-007", 601)] * 4, None)
        self.assertEqual(out["therapy_reward"], [None] * 4)
        for info in out["therapy_info"]:
            self.assertEqual(info["status"], "unscored")
            self.assertTrue(info["unscored_reason"])
        log = MetricLog()
        self.assertEqual(reward_func(therapy_reward=out["therapy_reward"], log_metric=log), [None] * 4)
        self.assertEqual(log.values, [("therapygym/unscored", 1.0)])
        # Tokens are still complete: the policy trains on nothing here only because TRL masks
        # the NaN reward (advantage 0), not because anything was dropped.
        self.assertTrue(all(len(c) > 0 and not math.isnan(sum(lp)) for c, lp in zip(out["completion_ids"], out["logprobs"])))


if __name__ == "__main__":
    unittest.main()
