"""verl: TherapyInteraction driven the way verl's ToolAgentLoop drives it, and compute_score,
against a real `therapygym serve` with scripted patient and judge."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
import unittest
import urllib.request
import uuid

from fakes import run_verl_like
from server import Service
from therapygym_adapters.client import TherapyGymClient, TherapyGymError
from therapygym_adapters.verl import TherapyInteraction, compute_score, compute_score_async

UNSCORED = "therapygym/unscored"


def verl_grpo_advantages(rewards: list[float], eps: float = 1e-6) -> list[float]:
    """verl's compute_grpo_outcome_advantage for one group (unbiased std, ε 1e-6)."""
    m = statistics.fmean(rewards)
    s = statistics.stdev(rewards)
    return [(r - m) / (s + eps) for r in rewards]


async def play(interaction, instance_id, kwargs, texts, system=None):
    """What ToolAgentLoop does with an interaction (b178a3cd): start, then after every generated
    turn generate_response(request_id, messages, **interaction_kwargs); a not-None score goes to
    turn_scores; the returned text is appended as a user message (also on the last call)."""
    await interaction.start_interaction(instance_id, **kwargs)
    messages = [{"role": "system", "content": system or "You are a CBT therapist."}]
    turn_scores: list[float] = []
    done, info = False, {}
    for text in texts:
        messages.append({"role": "assistant", "content": text})
        done, reply, score, info = await interaction.generate_response(instance_id, messages, **kwargs)
        messages.append({"role": "user", "content": reply})
        if score is not None:
            turn_scores.append(score)
        if done:
            break
    return messages, turn_scores, done, info


def texts_for(member: int, n: int = 5) -> list[str]:
    return [f"Member {member}, turn {t}: what went through your mind?" for t in range(1, n + 1)]


def extra(kwargs, turn_scores):
    return {"interaction_kwargs": kwargs, "turn_scores": turn_scores, "num_turns": 2 * len(turn_scores) + 1}


class VerlEpisodeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.svc = Service("--turns", "3").start()
        cls.client = TherapyGymClient(cls.svc.url, max_retries=0)

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def interaction(self, **config):
        return TherapyInteraction({"name": "therapy", "base_url": self.svc.url, **config})

    def test_full_episode_and_compute_score(self):
        it = self.interaction()
        kwargs = {"name": "therapy", "profile_id": "tg-001", "seed": 101}
        rid = uuid.uuid4().hex  # ToolAgentLoop's request_id
        texts = texts_for(1)
        messages, turn_scores, done, info = asyncio.run(play(it, rid, kwargs, texts))
        self.assertTrue(done)
        # Three therapist turns (the service's --turns); the patient (scripted echo) answered
        # the first two, the last call returns no text (the closing reply is judged only).
        assistants = [m["content"] for m in messages if m["role"] == "assistant"]
        users = [m["content"] for m in messages if m["role"] == "user"]
        self.assertEqual(assistants, texts[:3])
        self.assertEqual(users, [texts[0], texts[1], ""])
        self.assertEqual(len(turn_scores), 1)  # intermediate steps score None
        final = turn_scores[0]
        self.assertTrue(math.isfinite(final))
        self.assertEqual(info["status"], "scored")
        # The same transcript scored statelessly gives the same reward.
        transcript = []
        for a, u in zip(texts[:2], users[:2]):
            transcript += [{"role": "assistant", "content": a}, {"role": "user", "content": u}]
        transcript += [
            {"role": "assistant", "content": texts[2]},
            {"role": "user", "content": info["closing_patient_reply"]},
        ]
        again = self.client.score([{"id": "x", "messages": transcript, "task": {"profile_id": "tg-001", "seed": 101}}])
        self.assertAlmostEqual(again[0]["reward"], final, places=12)
        # Closed on the terminating step (verl never calls finalize_interaction).
        with self.assertRaises(TherapyGymError) as cm:
            self.client.score_episode(rid)
        self.assertEqual(cm.exception.kind, "episode_not_found")
        # The reward function reads the final score.
        out = compute_score("therapygym", "ignored", "{}", extra(kwargs, turn_scores), base_url=self.svc.url)
        self.assertEqual(out, {"score": final, UNSCORED: 0.0, "therapygym/cut_short": 0.0})
        out = asyncio.run(
            compute_score_async("therapygym", "ignored", "{}", extra(kwargs, turn_scores), base_url=self.svc.url)
        )
        self.assertEqual(out, {"score": final, UNSCORED: 0.0, "therapygym/cut_short": 0.0})

    def test_calculate_score_and_finalize(self):
        it = self.interaction(close_on_done=False)
        kwargs = {"name": "therapy", "profile_id": "tg-002", "seed": 5}
        _, turn_scores, done, _ = asyncio.run(play(it, "verl-calc-1", kwargs, texts_for(2)))
        self.assertTrue(done)
        self.assertEqual(asyncio.run(it.calculate_score("verl-calc-1")), turn_scores[-1])
        self.assertEqual(self.client.score_episode("verl-calc-1")["reward"], turn_scores[-1])
        asyncio.run(it.finalize_interaction("verl-calc-1"))
        with self.assertRaises(TherapyGymError):
            self.client.score_episode("verl-calc-1")

    def test_a_fresh_interaction_object_continues_an_episode(self):
        kwargs = {"name": "therapy", "profile_id": "tg-003", "seed": 77}
        a = self.interaction()

        async def run():
            await a.start_interaction("verl-restart-1", **kwargs)
            msgs = [{"role": "system", "content": "s"}, {"role": "assistant", "content": "First turn."}]
            _, reply, _, _ = await a.generate_response("verl-restart-1", msgs, **kwargs)
            msgs += [{"role": "user", "content": reply}, {"role": "assistant", "content": "Second turn."}]
            b = self.interaction()  # knows nothing about the episode
            return await b.generate_response("verl-restart-1", msgs, **kwargs)

        done, reply, score, info = asyncio.run(run())
        self.assertFalse(done)
        self.assertEqual(reply, "Second turn.")
        self.assertIsNone(score)

    def test_member_cut_short_by_verl_is_abandoned_and_gets_the_group_mean(self):
        # verl ends a sample when response_length or max_assistant_turns is reached right after a
        # generation: the interaction never sees that turn and finalize_interaction is never
        # called, so the service's episode stays open. compute_score (with what verl gives it:
        # num_turns and the decoded response) abandons it; its group completes at once.
        seed = 4242
        kwargs = {"name": "therapy", "profile_id": "tg-004", "seed": seed}
        rewards = []
        for m in range(3):
            r = asyncio.run(run_verl_like(self.interaction(), kwargs, texts_for(m)))
            self.assertTrue(r["done"])
            rewards.append(r["turn_scores"][-1])
        cut = asyncio.run(run_verl_like(self.interaction(), kwargs, texts_for(3), max_assistant_turns=2))
        self.assertTrue(cut["cut_short"])
        self.assertEqual((cut["turn_scores"], cut["num_turns"]), ([], 4))
        started = time.monotonic()
        out = compute_score(None, cut["solution_str"], "", cut["extra_info"], base_url=self.svc.url, group_wait_s=30)
        self.assertLess(time.monotonic() - started, 10, "no wait for a TTL")
        self.assertEqual(out[UNSCORED], 1.0)
        self.assertEqual(out["therapygym/cut_short"], 1.0)
        self.assertAlmostEqual(out["score"], statistics.fmean(rewards), places=12)
        adv = verl_grpo_advantages(rewards + [out["score"]])
        self.assertAlmostEqual(adv[3], 0.0, places=9)
        g = self.client.group(f"tg-004:{seed}", group_size=4)
        self.assertEqual((g["complete"], g["abandoned"], g["scored"]), (True, 1, 3))
        member = next(m for m in g["members"] if m["episode_id"] == cut["request_id"])
        self.assertEqual((member["status"], member["unscored_reason"]), ("abandoned", "engine_cut_short"))

    def test_cut_short_by_response_length_among_playing_group_mates(self):
        # The reward loop scores a sample as soon as its own loop ends, while its group mates still
        # play with the same number of turns: the decoded response picks out the right episode.
        kwargs = {"name": "therapy", "profile_id": "tg-008", "seed": 77}
        url = self.svc.url

        async def run():
            a, b = self.interaction(), self.interaction()
            await a.start_interaction("verl-rl-a", **kwargs)
            msgs = [{"role": "system", "content": "s"}, {"role": "assistant", "content": "Mate turn one."}]
            await a.generate_response("verl-rl-a", msgs, **kwargs)  # a is at 1 turn, still playing
            cut = await run_verl_like(b, kwargs, texts_for(9), request_id="verl-rl-b", response_length=130)
            out = await compute_score_async(None, cut["solution_str"], "", cut["extra_info"], base_url=url,
                                            group_wait_s=1, poll_s=0.1, group_size=2)
            return cut, out

        cut, out = asyncio.run(run())
        self.assertTrue(cut["cut_short"])
        self.assertEqual(cut["num_turns"], 4)
        g = self.client.group("tg-008:77", group_size=2)
        status = {m["episode_id"]: m["status"] for m in g["members"]}
        self.assertEqual(status, {"verl-rl-a": "active", "verl-rl-b": "abandoned"})
        # a never finished within group_wait_s: the neutral value, flagged, instead of an exception.
        self.assertEqual(out, {"score": 0.0, UNSCORED: 1.0, "therapygym/cut_short": 1.0})

    def test_service_failures_never_raise_into_verl(self):
        with Service("--turns", "3", patient="scripted:http_500") as svc:
            it = TherapyInteraction({"base_url": svc.url, "max_retries": 0})
            kwargs = {"name": "therapy", "profile_id": "tg-009", "seed": 5, "group_size": 2}
            r = asyncio.run(run_verl_like(it, kwargs, texts_for(1)))
            self.assertTrue(r["done"])
            self.assertTrue(math.isnan(r["turn_scores"][-1]))
            self.assertEqual(r["info"]["unscored_reason"], "patient_unavailable")
            g = TherapyGymClient(svc.url).group("tg-009:5", group_size=1)
            self.assertEqual(g["members"][0]["status"], "abandoned")
            out = compute_score(None, r["solution_str"], "", r["extra_info"], base_url=svc.url,
                                group_wait_s=0.5, poll_s=0.1, all_unscored_value=0.125)
            self.assertEqual(out, {"score": 0.125, UNSCORED: 1.0, "therapygym/cut_short": 0.0})

    def test_abandoned_episodes_do_not_pile_up(self):
        # verl never finalises (docs/rl-engines.md, the gotchas). The service's TTL bounds what is left.
        with Service("--ttl-s", "1", "--turns", "3") as svc:
            it = TherapyInteraction({"base_url": svc.url})

            async def start_many():
                await asyncio.gather(
                    *[
                        it.start_interaction(f"verl-leak-{i}", name="therapy", profile_id="tg-005", seed=i)
                        for i in range(200)
                    ]
                )

            asyncio.run(start_many())
            self.assertEqual(live_episodes(svc.url), 200)
            deadline = time.monotonic() + 30
            while live_episodes(svc.url) and time.monotonic() < deadline:
                time.sleep(0.5)
            self.assertEqual(live_episodes(svc.url), 0)


def live_episodes(url: str) -> int:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith("therapygym_live_episodes"):
            return int(float(line.split()[-1]))
    raise AssertionError("no therapygym_live_episodes in /metrics")


class VerlUnscoredTest(unittest.TestCase):
    """The judge's first reply is malformed and there are no re-asks: the first session to end
    is unscored, the others are scored."""

    @classmethod
    def setUpClass(cls):
        cls.svc = Service("--turns", "2", "--judge-retries", "0", judge="scripted:malformed_json:1").start()

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def test_unscored_member_gets_scored_mean_and_zero_advantage(self):
        kwargs = {"name": "therapy", "profile_id": "tg-006", "seed": 9}
        url = self.svc.url

        async def run():
            first = TherapyInteraction({"base_url": url})
            _, ts0, done, info = await play(first, "verl-u-0", kwargs, texts_for(0))
            self.assertTrue(done)
            self.assertEqual(info["status"], "unscored")
            self.assertTrue(math.isnan(ts0[-1]))
            # The reward function waits for the group while the other members still play.
            pending = asyncio.ensure_future(
                compute_score_async(None, "", "", extra(kwargs, ts0), base_url=url, group_wait_s=60, poll_s=0.1)
            )
            others = await asyncio.gather(
                *[play(TherapyInteraction({"base_url": url}), f"verl-u-{m}", kwargs, texts_for(m)) for m in (1, 2, 3)]
            )
            return await pending, [o[1][-1] for o in others]

        out, rewards = asyncio.run(run())
        self.assertTrue(all(math.isfinite(r) for r in rewards))
        self.assertEqual(out[UNSCORED], 1.0)
        self.assertAlmostEqual(out["score"], statistics.fmean(rewards), places=12)
        # Scored members keep their own reward.
        for m, r in zip((1, 2, 3), rewards):
            got = compute_score(None, "", "", extra(kwargs, [r]), base_url=url)
            self.assertEqual(got, {"score": r, UNSCORED: 0.0, "therapygym/cut_short": 0.0})
        adv = verl_grpo_advantages([out["score"]] + rewards)
        self.assertAlmostEqual(adv[0], 0.0, places=9)


class VerlGroupEndToEndTest(unittest.TestCase):
    """A whole GRPO group the way verl runs it: four samples concurrently (asyncio.gather, where
    one exception fails the step), each scored by the reward loop as soon as its own loop ends.
    One member is cut short by verl, the first to finish is unscored (the judge's first reply is
    malformed, no re-asks), the other two score."""

    @classmethod
    def setUpClass(cls):
        cls.svc = Service("--turns", "3", "--judge-retries", "0", judge="scripted:malformed_json:1").start()

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def test_cut_short_unscored_and_scored_members_in_one_step(self):
        kwargs = {"name": "therapy", "profile_id": "tg-010", "seed": 31}
        url = self.svc.url

        async def sample(m: int):
            it = TherapyInteraction({"base_url": url})
            if m == 3:
                await asyncio.sleep(0.3)  # the cut member ends last, while no mate is left to match
            r = await run_verl_like(it, kwargs, texts_for(m), max_assistant_turns=2 if m == 3 else None)
            out = await compute_score_async(None, r["solution_str"], "", r["extra_info"], base_url=url,
                                            group_wait_s=30, poll_s=0.1)
            return r, out

        async def step():
            return await asyncio.wait_for(asyncio.gather(*[sample(m) for m in range(4)]), 60)

        results = asyncio.run(step())
        outs = [o for _, o in results]
        cut = outs[3]
        self.assertEqual((cut[UNSCORED], cut["therapygym/cut_short"]), (1.0, 1.0))
        finished = outs[:3]
        self.assertEqual(sorted(o[UNSCORED] for o in finished), [0.0, 0.0, 1.0])
        scored = [o["score"] for o in finished if o[UNSCORED] == 0.0]
        mean = statistics.fmean(scored)
        for o in outs:
            if o[UNSCORED] == 1.0:
                self.assertAlmostEqual(o["score"], mean, places=12)
        adv = verl_grpo_advantages([o["score"] for o in outs])
        for o, a in zip(outs, adv):
            if o[UNSCORED] == 1.0:
                self.assertAlmostEqual(a, 0.0, places=9)
        g = TherapyGymClient(url).group("tg-010:31")
        self.assertEqual((g["complete"], g["scored"], g["unscored"], g["abandoned"]), (True, 2, 1, 1))

    def test_validation_padding_and_rounds_never_share_a_group(self):
        # verl pads the validation batch to a multiple of agent.num_workers by duplicating rows
        # (the very same row dict), and plays the same rows at every validation. Rows built with
        # --split val --group-size 1: each episode is its own group.
        row = {"name": "therapy", "profile_id": "tg-h01", "seed": 7, "split": "val", "group_size": 1}
        with Service("--turns", "2", "--judge-retries", "0", judge="scripted:malformed_json:1") as svc:
            self._validation(row, svc.url)

    def _validation(self, row, url):

        async def round_(n: int):
            rs = await asyncio.gather(
                *[run_verl_like(TherapyInteraction({"base_url": url}), row, texts_for(k)) for k in range(n)]
            )
            return [
                (r, await compute_score_async(None, r["solution_str"], "", r["extra_info"], base_url=url,
                                              group_wait_s=5, poll_s=0.1, all_unscored_value=0.5))
                for r in rs
            ]

        first = asyncio.run(round_(3))  # one row, padded with two duplicates
        second = asyncio.run(round_(1))  # the next validation round
        outs = [o for _, o in first + second]
        self.assertTrue(all(o["therapygym/cut_short"] == 0.0 for o in outs))
        self.assertEqual(sum(o[UNSCORED] for o in outs), 1.0)
        for r, o in first + second:
            if o[UNSCORED] == 1.0:  # never another member's (or round's) value
                self.assertEqual(o["score"], 0.5)
            else:
                self.assertEqual(o["score"], r["turn_scores"][-1])
        metrics = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
        self.assertIn("therapygym_group_overflow_total 0", metrics)
        # A cut-short validation sample is found in its own group and masked at once.
        cut = asyncio.run(run_verl_like(TherapyInteraction({"base_url": url}), row, texts_for(5), max_assistant_turns=2))
        out = compute_score(None, cut["solution_str"], "", cut["extra_info"], base_url=url, group_wait_s=5,
                            all_unscored_value=0.5)
        self.assertEqual(out, {"score": 0.5, UNSCORED: 1.0, "therapygym/cut_short": 1.0})
        self.assertEqual(live_episodes(url), 0)


TURN_REWARD_TOML = """id = "turny"
[turn_reward]
judge_every = 0
[[turn_reward.text_terms]]
name = "questions"
patterns = ["?"]
weight = 0.25
cap = 1
"""


class TurnRewardService:
    """A service with ``--turn-reward`` and a reward config whose ``[turn_reward]`` gives 0.25 for a
    question in the turn."""

    def __enter__(self):
        import tempfile  # noqa: PLC0415

        self.dir = tempfile.TemporaryDirectory()
        path = f"{self.dir.name}/reward.toml"
        with open(path, "w") as f:
            f.write(TURN_REWARD_TOML)
        self.svc = Service("--turns", "3", "--turn-reward", "--reward-config", path).start()
        return self.svc

    def __exit__(self, *exc):
        self.svc.stop()
        self.dir.cleanup()


class VerlTurnRewardTest(unittest.TestCase):
    def test_per_turn_rewards_reach_turn_scores_and_the_session_reward_decides(self):
        with TurnRewardService() as svc:
            kwargs = {"name": "therapy", "profile_id": "tg-011", "seed": 3}
            texts = ["How are you?", "I see.", "What next?"]
            r = asyncio.run(run_verl_like(TherapyInteraction({"base_url": svc.url}), kwargs, texts))
            self.assertTrue(r["done"])
            self.assertEqual(r["turn_scores"][:2], [0.25, 0.0])
            self.assertEqual(len(r["turn_scores"]), 3)
            out = compute_score(None, r["solution_str"], "", r["extra_info"], base_url=svc.url)
            self.assertEqual(out["score"], r["turn_scores"][-1])
            self.assertEqual(out[UNSCORED], 0.0)


class VerlAllUnscoredTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.svc = Service("--turns", "1", "--judge-retries", "0", judge="scripted:malformed_json").start()

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def test_no_scored_member_gives_every_member_the_same_constant(self):
        kwargs = {"name": "therapy", "profile_id": "tg-007", "seed": 3}

        async def run():
            return await asyncio.gather(
                *[
                    play(TherapyInteraction({"base_url": self.svc.url}), f"verl-a-{m}", kwargs, texts_for(m))
                    for m in range(4)
                ]
            )

        results = asyncio.run(run())
        outs = []
        for _, ts, done, info in results:
            self.assertTrue(done)
            self.assertTrue(math.isnan(ts[-1]))
            self.assertEqual(info["status"], "unscored")
            self.assertTrue(info.get("unscored_reason"))
            outs.append(
                compute_score(None, "", "", extra(kwargs, ts), base_url=self.svc.url, all_unscored_value=0.25)
            )
        self.assertEqual(outs, [{"score": 0.25, UNSCORED: 1.0, "therapygym/cut_short": 0.0}] * 4)

    def test_missing_extra_info_is_an_error_not_a_zero(self):
        with self.assertRaises(ValueError):
            compute_score("therapygym", "text", "gt", None, base_url=self.svc.url)
        with self.assertRaises(ValueError):
            compute_score("therapygym", "text", "gt", {"interaction_kwargs": {"profile_id": "tg-001", "seed": 1}})


if __name__ == "__main__":
    unittest.main()
