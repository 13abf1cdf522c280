"""TherapyGymClient against a local stub (retries, Retry-After, error envelopes) and against the
real service (its error envelopes and ordinary calls)."""

from __future__ import annotations

import json
import pickle
import socket
import threading
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from server import Service
from therapygym_adapters.client import TherapyGymClient, TherapyGymError


class Stub:
    """An HTTP server that answers from a script: a list of (status, headers, body) per call."""

    def __init__(self, script: list[tuple[int, dict, object]]) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, str, object]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                body = json.loads(raw) if raw else None
                stub.requests.append((self.command, self.path, body))
                status, headers, payload = stub.script.pop(0) if stub.script else (500, {}, "script exhausted")
                data = payload if isinstance(payload, bytes) else (
                    payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                )
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if status != 204:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if status != 204:
                    self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def envelope(kind: str, retryable: bool, message: str = "m", **extra: object) -> dict:
    return {"error": {"kind": kind, "retryable": retryable, "message": message, **extra}}


class ClientRetryTest(unittest.TestCase):
    def run_stub(self, script, **client_kw):
        stub = Stub(script)
        self.addCleanup(stub.close)
        slept: list[float] = []
        client = TherapyGymClient(stub.url, sleep=slept.append, **client_kw)
        return stub, client, slept

    def test_429_waits_for_retry_after_header_then_succeeds(self):
        stub, client, slept = self.run_stub(
            [
                (429, {"Retry-After": "2"}, envelope("overloaded", True, retry_after_s=7)),
                (429, {"Retry-After": "3"}, envelope("overloaded", True)),
                (200, {}, {"status": "ok"}),
            ]
        )
        self.assertEqual(client.health(), {"status": "ok"})
        self.assertEqual(slept, [2.0, 3.0])  # the header wins over the body
        self.assertEqual(len(stub.requests), 3)

    def test_503_uses_retry_after_s_from_the_envelope(self):
        stub, client, slept = self.run_stub(
            [
                (503, {}, envelope("patient_unavailable", True, retry_after_s=4, episode_id="e1")),
                (200, {}, {"episode_id": "e1", "turn": 1, "done": False}),
            ]
        )
        out = client.step("e1", "Hello", 1)
        self.assertEqual(out["turn"], 1)
        self.assertEqual(slept, [4.0])
        # The retry re-posts the identical turn (the service answers it from its store).
        self.assertEqual(stub.requests[0], stub.requests[1])
        self.assertEqual(
            stub.requests[0],
            ("POST", "/v1/episodes/e1/step", {"assistant": {"role": "assistant", "content": "Hello"}, "turn": 1}),
        )

    def test_retryable_without_retry_after_backs_off_exponentially(self):
        stub, client, slept = self.run_stub(
            [(503, {}, envelope("circuit_open", True))] * 3 + [(200, {}, {"ok": 1})],
            backoff_s=0.5,
        )
        self.assertEqual(client.info(), {"ok": 1})
        self.assertEqual(len(slept), 3)
        for got, base in zip(slept, [0.5, 1.0, 2.0]):
            self.assertGreaterEqual(got, base)
            self.assertLessEqual(got, base * 1.1 + 1e-9)

    def test_gives_up_after_max_retries_with_the_last_error(self):
        stub, client, slept = self.run_stub(
            [(503, {"Retry-After": "1"}, envelope("judge_unavailable", True, "judge down", group_id="p:1"))] * 10,
            max_retries=2,
        )
        with self.assertRaises(TherapyGymError) as cm:
            client.score([{"messages": [{"role": "assistant", "content": "hi"}]}])
        e = cm.exception
        self.assertEqual((e.kind, e.status, e.retryable, e.attempts), ("judge_unavailable", 503, True, 3))
        self.assertEqual(e.group_id, "p:1")
        self.assertIn("judge down", str(e))
        self.assertEqual(len(stub.requests), 3)
        self.assertEqual(slept, [1.0, 1.0])

    def test_non_retryable_errors_raise_at_once_with_the_envelope(self):
        stub, client, slept = self.run_stub(
            [(409, {}, envelope("turn_conflict", False, "turn 3 differs", episode_id="e9", group_id="g"))]
        )
        with self.assertRaises(TherapyGymError) as cm:
            client.step("e9", "x", 3)
        e = cm.exception
        self.assertEqual((e.kind, e.status, e.message, e.episode_id, e.group_id), ("turn_conflict", 409, "turn 3 differs", "e9", "g"))
        self.assertFalse(e.retryable)
        self.assertEqual(slept, [])
        self.assertEqual(len(stub.requests), 1)

    def test_retryable_flag_false_is_honoured_even_on_503(self):
        stub, client, slept = self.run_stub([(503, {}, envelope("something", False))])
        with self.assertRaises(TherapyGymError) as cm:
            client.info()
        self.assertEqual(cm.exception.kind, "something")
        self.assertEqual(len(stub.requests), 1)

    def test_answers_without_the_envelope(self):
        stub, client, slept = self.run_stub(
            [
                (503, {}, "<html>proxy says busy</html>"),  # retryable by status
                (502, {}, "<html>bad gateway</html>"),  # not retryable
            ]
        )
        with self.assertRaises(TherapyGymError) as cm:
            client.info()
        e = cm.exception
        self.assertEqual((e.kind, e.status), ("http_error", 502))
        self.assertIn("bad gateway", e.message)
        self.assertEqual(len(slept), 1)

    def test_204_and_query_strings(self):
        stub, client, slept = self.run_stub(
            [(204, {}, b""), (200, {}, {"complete": True})]
        )
        self.assertIsNone(client.delete_episode("verl-1"))
        client.group("tg-001:7", wait_s=30, group_size=4)
        self.assertEqual(stub.requests[0][:2], ("DELETE", "/v1/episodes/verl-1"))
        self.assertEqual(stub.requests[1][:2], ("GET", "/v1/groups/tg-001:7?wait_s=30&group_size=4"))

    def test_connection_refused_is_a_typed_error(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        slept: list[float] = []
        client = TherapyGymClient(f"http://127.0.0.1:{port}", max_retries=1, sleep=slept.append)
        with self.assertRaises(TherapyGymError) as cm:
            client.health()
        self.assertEqual((cm.exception.kind, cm.exception.status), ("connection_error", 0))
        self.assertEqual(len(slept), 1)

    def test_client_pickles(self):
        c = pickle.loads(pickle.dumps(TherapyGymClient("127.0.0.1:9")))
        self.assertEqual(c.base_url, "http://127.0.0.1:9")


class ClientServiceTest(unittest.TestCase):
    """The real service's envelopes come through as typed errors."""

    @classmethod
    def setUpClass(cls):
        cls.svc = Service("--turns", "2").start()
        cls.client = TherapyGymClient(cls.svc.url, max_retries=0)

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def test_health_and_info(self):
        self.assertEqual(self.client.health()["status"], "ok")
        info = self.client.info()
        self.assertEqual(info["protocol"], 1)
        self.assertEqual(info["group_size"], 4)

    def test_error_envelopes(self):
        c = self.client
        with self.assertRaises(TherapyGymError) as cm:
            c.step("never-created", "hi", 1)
        self.assertEqual((cm.exception.kind, cm.exception.status), ("episode_not_found", 404))
        with self.assertRaises(TherapyGymError) as cm:
            c.create_episode("no-such-profile", 1)
        self.assertEqual((cm.exception.kind, cm.exception.status), ("unknown_profile", 422))
        c.create_episode("tg-001", 5, episode_id="client-e1")
        c.step("client-e1", "How was your week?", 1)
        with self.assertRaises(TherapyGymError) as cm:
            c.step("client-e1", "Something else entirely", 1)
        self.assertEqual((cm.exception.kind, cm.exception.status), ("turn_conflict", 409))
        self.assertEqual(cm.exception.episode_id, "client-e1")
        with self.assertRaises(TherapyGymError) as cm:
            c.score_episode("client-e1")
        self.assertEqual(cm.exception.kind, "episode_not_done")
        last = c.step("client-e1", "What would you like to work on?", 2)
        self.assertTrue(last["done"])
        with self.assertRaises(TherapyGymError) as cm:
            c.step("client-e1", "One more", 3)
        self.assertEqual((cm.exception.kind, cm.exception.status), ("episode_done", 409))
        self.assertEqual(c.score_episode("client-e1")["reward"], last["reward"])
        c.delete_episode("client-e1")
        c.delete_episode("client-e1")  # 204 again

    def test_idempotent_step_and_create(self):
        c = self.client
        a = c.create_episode("tg-002", 9, episode_id="client-e2")
        b = c.create_episode("tg-002", 9, episode_id="client-e2")
        self.assertEqual(a["messages"], b["messages"])
        s1 = c.step("client-e2", "Tell me about the week.", 1)
        s2 = c.step("client-e2", "Tell me about the week.", 1)
        self.assertEqual(s1, s2)
        c.delete_episode("client-e2")


class ClientOverloadedServiceTest(unittest.TestCase):
    """The real service's 429 `overloaded` (admission control) is waited out and retried."""

    @classmethod
    def setUpClass(cls):
        cls.svc = Service("--max-live-episodes", "1").start()

    @classmethod
    def tearDownClass(cls):
        cls.svc.stop()

    def test_overloaded_is_retried_after_retry_after(self):
        plain = TherapyGymClient(self.svc.url, max_retries=0)
        plain.create_episode("tg-001", 1, episode_id="busy-1")
        with self.assertRaises(TherapyGymError) as cm:
            plain.create_episode("tg-001", 2, episode_id="busy-2")
        e = cm.exception
        self.assertEqual((e.kind, e.status, e.retryable), ("overloaded", 429, True))
        self.assertIsNotNone(e.retry_after_s)
        waits: list[float] = []

        def sleep(s: float) -> None:  # while "waiting", the first episode goes away
            waits.append(s)
            plain.delete_episode("busy-1")

        patient = TherapyGymClient(self.svc.url, max_retries=3, sleep=sleep)
        out = patient.create_episode("tg-001", 2, episode_id="busy-2")
        self.assertEqual(out["episode_id"], "busy-2")
        self.assertEqual(waits, [e.retry_after_s])
        plain.delete_episode("busy-2")


if __name__ == "__main__":
    unittest.main()
