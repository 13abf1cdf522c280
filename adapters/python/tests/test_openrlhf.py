"""OpenRLHF: the agent driven the way OpenRLHF 0.11's MultiTurnAgentExecutor drives it (token
boundaries of the chat markup included), and the /get_reward route, against a real service."""

from __future__ import annotations

import asyncio
import json
import statistics
import unittest

import threading

from fakes import FakeTokenizer, SamplingParams, run_openrlhf_like, therapist_text
from server import Service
from therapygym_adapters.client import TherapyGymClient, TherapyGymError
from therapygym_adapters.openrlhf import get_reward, label_for, make_agent_executor, reward_query

UNSCORED = "therapygym/unscored"


def openrlhf_group_norm(rewards: list[float], eps: float = 1e-9) -> list[float]:
    m = statistics.fmean(rewards)
    s = statistics.stdev(rewards)
    return [(r - m) / (s + eps) for r in rewards]


def conversation(system: str, actions: list[str], feedback_users: list[str]) -> list[dict]:
    msgs = [{"role": "system", "content": system}]
    for k, a in enumerate(actions):
        msgs.append({"role": "assistant", "content": a})
        if k < len(feedback_users):
            msgs.append({"role": "user", "content": feedback_users[k]})
    return msgs


class OpenRLHFAgentTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.svc = Service("--turns", "3").start()
        cls.client = TherapyGymClient(cls.svc.url, max_retries=0)
        cls.system = cls.client.create_episode("tg-001", 1, episode_id="probe-sys", group_id="probe-sys")[
            "messages"
        ][0]["content"]
        cls.client.delete_episode("probe-sys")

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def run_agent(self, tok, label, **kw):
        executor_kw = {k: kw.pop(k) for k in list(kw) if k in ("template", "eos_is_turn_end", "min_turn_tokens")}
        Executor = make_agent_executor(base_url=self.svc.url, **executor_kw)
        return asyncio.run(run_openrlhf_like(Executor(), tok, label, **kw))

    def test_chatml_episode_token_boundaries(self):
        tok = FakeTokenizer("chatml")
        label = label_for("tg-001", 303)
        out = self.run_agent(tok, label)
        self.assertEqual(len(out["actions"]), 3)
        # The patient (scripted echo) repeats the therapist's turn.
        users = out["actions"][:2]
        text = tok.decode(out["tokens"])
        # Token for token the canonical ChatML rendering: the system prompt from the service,
        # every turn closed exactly once, the conversation ending on the therapist's EOS.
        expected = tok.apply_chat_template(conversation(self.system, out["actions"], users), tokenize=False)
        self.assertEqual(text, expected.rstrip("\n"))
        self.assertNotIn("<|im_end|><|im_end|>", text)
        im_end = tok.special_ids["<|im_end|>"]
        im_start = tok.special_ids["<|im_start|>"]
        toks = out["tokens"]
        for k, (start, end) in enumerate(out["action_ranges"]):
            # A therapist turn starts right after "<|im_start|>assistant\n" ...
            self.assertEqual(toks[start - len(tok.encode("<|im_start|>assistant\n")) : start], tok.encode("<|im_start|>assistant\n"))
            # ... and is the turn's text plus one EOS (= <|im_end|>), nothing of the patient.
            self.assertEqual(tok.decode(toks[start:end]), out["actions"][k] + "<|im_end|>")
            if k < 2:
                # The patient's turn is its own ChatML user turn, outside the action range.
                feedback = toks[end : out["action_ranges"][k + 1][0]]
                self.assertEqual(feedback[0], tok.encode("\n")[0])
                self.assertEqual(feedback[1], im_start)
                self.assertEqual(tok.decode(feedback), f"\n<|im_start|>user\n{users[k]}<|im_end|>\n<|im_start|>assistant\n")
        self.assertEqual(toks[-1], im_end)
        self.assertEqual(out["feedbacks"][-1], "")
        # Reward at the end only; scores is the CTRS value in [0, 1].
        self.assertEqual(out["extra_logs"][UNSCORED], 0.0)
        self.assertGreaterEqual(out["scores"], 0.0)
        self.assertLessEqual(out["scores"], 1.0)
        self.assertEqual(out["extra_logs"]["therapygym/ctrs"], out["scores"])
        # The decoded sequence is what OpenRLHF would send to /get_reward: the service reads the
        # same turns back from it as /v1/score does from the messages.
        via_route = get_reward(self.client, [text], [label])
        msgs = conversation(self.system, out["actions"], users)[1:]
        via_score = self.client.score([{"messages": msgs, "task": {"profile_id": "tg-001", "seed": 303}}])[0]
        self.assertAlmostEqual(via_route["rewards"][0], via_score["reward"], places=12)
        # Closed at the end.
        with self.assertRaises(TherapyGymError) as cm:
            self.client.score_episode(out["episode_id"])
        self.assertEqual(cm.exception.kind, "episode_not_found")

    def test_policy_whose_eos_is_not_the_turn_end(self):
        tok = FakeTokenizer("chatml")
        out = self.run_agent(tok, label_for("tg-002", 304), eos_is_turn_end=False, eos_in_tokens=False)
        users = out["actions"][:2]
        self.assertTrue(out["feedbacks"][0].startswith("<|im_end|>\n<|im_start|>user\n"))
        self.assertEqual(out["feedbacks"][-1], "<|im_end|>")
        expected = tok.apply_chat_template(conversation(self.system, out["actions"], users), tokenize=False)
        self.assertEqual(tok.decode(out["tokens"]), expected.rstrip("\n"))

    def test_llama3_markup(self):
        tok = FakeTokenizer("llama3")
        out = self.run_agent(tok, {"profile_id": "tg-003", "seed": 305}, template="llama3")
        users = out["actions"][:2]
        expected = tok.apply_chat_template(conversation(self.system, out["actions"], users), tokenize=False)
        self.assertEqual(tok.decode(out["tokens"]), expected)
        self.assertNotIn("<|eot_id|><|eot_id|>", expected)

    def test_budget_exhausted_ends_the_episode_without_a_silent_zero(self):
        tok = FakeTokenizer("chatml")
        label = json.dumps({"profile_id": "tg-004", "seed": 306, "group_size": 1})
        Executor = make_agent_executor(base_url=self.svc.url, all_unscored_value=0.5, tokenizer=tok)
        prompt_len = len(tok.encode(tok.apply_chat_template([{"role": "system", "content": self.system}], tokenize=False, add_generation_prompt=True)))
        # About 120 tokens per turn with its patient reply: a second turn would not fit.
        out = asyncio.run(run_openrlhf_like(Executor(), tok, label, max_length=prompt_len + 150))
        self.assertEqual(len(out["actions"]), 1)
        self.assertEqual(out["reward"], 0.5)  # the group's constant: its only member is unscored
        self.assertEqual(out["extra_logs"][UNSCORED], 1.0)
        g = self.client.group("tg-004:306", group_size=1)
        self.assertEqual([m["status"] for m in g["members"]], ["abandoned"])
        self.assertEqual(g["members"][0]["unscored_reason"], "engine_budget")
        # Without a tokenizer the agent estimates; this fake has one token per character, which
        # is what bytes_per_token=1 says.
        label = json.dumps({"profile_id": "tg-004", "seed": 307, "group_size": 1})
        Executor = make_agent_executor(base_url=self.svc.url, all_unscored_value=0.5, bytes_per_token=1.0)
        out = asyncio.run(run_openrlhf_like(Executor(), tok, label, max_length=prompt_len + 200))
        self.assertEqual((len(out["actions"]), out["reward"], out["extra_logs"][UNSCORED]), (1, 0.5, 1.0))

    def test_samples_sharing_one_sampling_params_keep_their_own_budget(self):
        # OpenRLHF gives the n samples of a prompt one SamplingParams object and sets max_tokens
        # before each generation. Here the long-winded members 1-3 run ahead of member 0 (its
        # first generation is slow), so when member 0 steps, max_tokens holds a group mate's
        # nearly spent budget (98 tokens): read after an await it would end member 0 for nothing.
        tok = FakeTokenizer("chatml")
        label = json.dumps({"profile_id": "tg-008", "seed": 308, "group_size": 4})
        prompt_len = len(tok.encode(tok.apply_chat_template([{"role": "system", "content": self.system}], tokenize=False, add_generation_prompt=True)))
        max_length = prompt_len + 3 * 130 + 120

        def texts(m):
            return [therapist_text(t, m) + ("x" * 140 if m else "") for t in (1, 2, 3)]

        for max_len in (None, max_length):
            Executor = make_agent_executor(base_url=self.svc.url, tokenizer=tok, max_len=max_len)
            sp = SamplingParams()

            async def run():
                return await asyncio.gather(
                    *[
                        run_openrlhf_like(Executor(), tok, label, max_length=max_length, texts=texts(m),
                                          sampling_params=sp, generate_delay_s=0.3 if m == 0 else 0.0)
                        for m in range(4)
                    ]
                )

            outs = asyncio.run(run())
            # Member 0's three turns fit its own budget: it plays them and is scored.
            self.assertEqual(outs[0]["turns"], 3, max_len)
            self.assertEqual(outs[0]["extra_logs"][UNSCORED], 0.0)
            # The others ran out after their second turn: ended by the agent, never left open.
            for o in outs[1:]:
                self.assertEqual((o["turns"], o["extra_logs"][UNSCORED]), (2, 1.0))
                self.assertAlmostEqual(o["reward"], outs[0]["reward"], places=12)
            g = self.client.group("tg-008:308")
            self.assertEqual((g["complete"], g["abandoned"], g["scored"]), (True, 3, 1))
            label = json.dumps({"profile_id": "tg-008", "seed": 309, "group_size": 4})

    def test_counting_runs_off_the_event_loop(self):
        loop_threads = set()
        seen = []

        class Tok(FakeTokenizer):
            def encode(self, text, add_special_tokens=True):
                seen.append(threading.current_thread())
                return super().encode(text, add_special_tokens)

        tok = Tok("chatml")
        Executor = make_agent_executor(base_url=self.svc.url, tokenizer=tok, max_len=100_000)

        async def run():
            loop_threads.add(threading.current_thread())
            inst = Executor().agent_instance_cls()
            await inst.reset({"observation": "p", "label": label_for("tg-009", 310)})
            await inst.step({"action_text": "Hello there.", "sampling_params": SamplingParams(5)})
            return inst

        inst = asyncio.run(run())
        self.assertGreater(len(seen), 2)
        self.assertTrue(all(t not in loop_threads for t in seen), seen)
        self.assertGreater(inst.used, 0)

    def test_get_reward_with_a_chatml_query_and_labels(self):
        msgs = [
            {"role": "system", "content": "You are a CBT therapist."},
            {"role": "assistant", "content": "How has your week been since we last met?"},
            {"role": "user", "content": "Stressful. I keep thinking I will fail the exam."},
            {"role": "assistant", "content": "What goes through your mind when you picture failing?"},
        ]
        query = reward_query(msgs, "chatml")
        self.assertTrue(query.startswith("<|im_start|>system\n"))
        label = label_for("tg-005", 11)
        out = get_reward(self.client, [query + "<|endoftext|>"], [label], prompts=["ignored"])
        ref = self.client.score([{"messages": msgs[1:], "task": {"profile_id": "tg-005", "seed": 11}}])[0]
        self.assertEqual(out["rewards"], [ref["reward"]])
        self.assertEqual(out["scores"], [ref["ctrs"]["normalized"]])
        self.assertEqual(out["extra_logs"]["unscored"], [0.0])
        # Idempotent under OpenRLHF's retries.
        self.assertEqual(get_reward(self.client, [query + "<|endoftext|>"], [label])["rewards"], out["rewards"])

    def test_get_reward_refuses_a_bad_label(self):
        with self.assertRaises(TherapyGymError) as cm:
            get_reward(self.client, ["<|im_start|>assistant\nhi<|im_end|>"], ["not json"])
        self.assertEqual((cm.exception.kind, cm.exception.status), ("bad_label", 422))


class OpenRLHFUnscoredTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.svc = Service("--turns", "2", "--judge-retries", "0", judge="scripted:malformed_json:1").start()

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def test_unscored_member_gets_scored_mean(self):
        tok = FakeTokenizer("chatml")
        label = label_for("tg-006", 21)
        Executor = make_agent_executor(base_url=self.svc.url)

        async def run():
            return await asyncio.gather(
                *[
                    run_openrlhf_like(Executor(), tok, label, texts=[therapist_text(t, m) for t in (1, 2)])
                    for m in range(4)
                ]
            )

        outs = asyncio.run(run())
        flags = [o["extra_logs"][UNSCORED] for o in outs]
        self.assertEqual(sorted(flags), [0.0, 0.0, 0.0, 1.0])
        k = flags.index(1.0)
        scored = [o["reward"] for i, o in enumerate(outs) if i != k]
        self.assertAlmostEqual(outs[k]["reward"], statistics.fmean(scored), places=12)
        adv = openrlhf_group_norm([o["reward"] for o in outs])
        self.assertAlmostEqual(adv[k], 0.0, places=9)


class OpenRLHFGroupEndToEndTest(unittest.TestCase):
    """A whole group the way OpenRLHF's vLLM actor runs it (n samples of a prompt concurrently,
    one shared SamplingParams): one member runs out of max_len before the service ends it, the
    first to finish is unscored, the other two score."""

    @classmethod
    def setUpClass(cls):
        cls.svc = Service("--turns", "3", "--judge-retries", "0", judge="scripted:malformed_json:1").start()

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def test_cut_short_unscored_and_scored_members(self):
        tok = FakeTokenizer("chatml")
        client = TherapyGymClient(self.svc.url, max_retries=0)
        system = client.create_episode("tg-001", 1, episode_id="p-sys", group_id="p-sys")["messages"][0]["content"]
        client.delete_episode("p-sys")
        prompt_len = len(tok.encode(tok.apply_chat_template([{"role": "system", "content": system}], tokenize=False, add_generation_prompt=True)))
        label = label_for("tg-010", 41)
        Executor = make_agent_executor(base_url=self.svc.url, tokenizer=tok, max_len=prompt_len + 520)
        sp = SamplingParams()

        def texts(m):
            return [therapist_text(t, m) + ("y" * 200 if m == 3 else "") for t in (1, 2, 3)]

        async def run():
            return await asyncio.gather(
                *[
                    run_openrlhf_like(Executor(), tok, label, max_length=prompt_len + 520, texts=texts(m), sampling_params=sp)
                    for m in range(4)
                ]
            )

        outs = asyncio.run(asyncio.wait_for(run(), 60))
        self.assertEqual(outs[3]["turns"], 1)  # ran out of max_len: ended and abandoned
        flags = [o["extra_logs"][UNSCORED] for o in outs]
        self.assertEqual(flags[3], 1.0)
        self.assertEqual(sorted(flags[:3]), [0.0, 0.0, 1.0])
        scored = [o["reward"] for o in outs if o["extra_logs"][UNSCORED] == 0.0]
        for o in outs:
            if o["extra_logs"][UNSCORED] == 1.0:
                self.assertAlmostEqual(o["reward"], statistics.fmean(scored), places=12)
        adv = openrlhf_group_norm([o["reward"] for o in outs])
        for o, a in zip(outs, adv):
            if o["extra_logs"][UNSCORED] == 1.0:
                self.assertAlmostEqual(a, 0.0, places=9)
        g = client.group("tg-010:41")
        self.assertEqual((g["complete"], g["scored"], g["unscored"], g["abandoned"]), (True, 2, 1, 1))


class OpenRLHFTurnRewardTest(unittest.TestCase):
    def test_per_turn_rewards_are_the_step_rewards(self):
        from test_verl import TurnRewardService  # noqa: PLC0415

        with TurnRewardService() as svc:
            tok = FakeTokenizer("chatml")
            Executor = make_agent_executor(base_url=svc.url, tokenizer=tok)
            out = asyncio.run(
                run_openrlhf_like(Executor(), tok, label_for("tg-012", 4), texts=["How are you?", "I see.", "Why?"])
            )
            self.assertEqual(out["turns"], 3)
            self.assertEqual(out["step_rewards"][:2], [0.25, 0.0])
            # OpenRLHF sums the steps: the turn rewards plus the final session reward.
            self.assertAlmostEqual(out["reward"], 0.25 + out["step_rewards"][2], places=12)
            self.assertEqual(out["extra_logs"][UNSCORED], 0.0)


class OpenRLHFRewardRouteUnscoredTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.svc = Service("--judge-retries", "0", judge="scripted:malformed_json").start()

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def test_unscored_is_a_flagged_neutral_reward_not_a_4xx(self):
        # OpenRLHF retries a 4xx five times and then fails with a misleading error: a well-formed
        # request gets 200 with the documented neutral 0.0, flagged in extra_logs.
        client = TherapyGymClient(self.svc.url, max_retries=0)
        query = reward_query([{"role": "assistant", "content": "How are you?"}])
        out = get_reward(client, [query], [label_for("tg-001", 1)])
        self.assertEqual(out["rewards"], [0.0])
        self.assertEqual(out["extra_logs"]["unscored"], [1.0])
        self.assertEqual(out["unscored_reasons"], ["parse_failure"])
        # extra_logs must hold numbers only (OpenRLHF makes each a tensor).
        for v in out["extra_logs"].values():
            self.assertTrue(all(isinstance(x, float) for x in v))

    def test_the_old_error_is_an_opt_in(self):
        with Service("--judge-retries", "0", "--reward-unscored", "error", judge="scripted:malformed_json") as svc:
            client = TherapyGymClient(svc.url, max_retries=0)
            query = reward_query([{"role": "assistant", "content": "How are you?"}])
            with self.assertRaises(TherapyGymError) as cm:
                get_reward(client, [query], [label_for("tg-001", 1)])
            self.assertEqual((cm.exception.kind, cm.exception.status), ("unscored", 422))


if __name__ == "__main__":
    unittest.main()
