"""A small HTTP client for ``therapygym serve`` (docs/serve.md), standard library only.

Every non-2xx answer of the service is the error envelope
``{"error": {"kind", "retryable", "retry_after_s"?, "episode_id"?, "group_id"?, "message"}}``.
The client retries what the service marks retryable (429 ``overloaded``, 503
``patient_unavailable`` / ``judge_unavailable`` / ``circuit_open``), waiting for ``Retry-After``
(header, else ``retry_after_s``, else capped exponential backoff), and connection failures; it
raises :class:`TherapyGymError` for everything else and when the retries run out. It never turns
an error or an unscored session into a number: that is the adapters' job, and they follow
docs/rl-engines.md, "Unscored sessions".
"""

from __future__ import annotations

import email.utils
import http.client
import json
import logging
import os
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Mapping, Sequence

__all__ = ["DEFAULT_URL", "ENV_URL", "TherapyGymClient", "TherapyGymError"]

logger = logging.getLogger("therapygym_adapters")

DEFAULT_URL = "http://127.0.0.1:8700"
ENV_URL = "THERAPYGYM_URL"

# Statuses that are retryable even when a proxy in front of the service answered without the
# envelope; with the envelope, its `retryable` flag decides.
_RETRYABLE_STATUSES = (429, 503)
_ID_SAFE = "._:-"


class TherapyGymError(Exception):
    """An error answered by the service (the envelope's ``kind``) or met on the way to it.

    ``status`` is the HTTP status, or 0 when no HTTP answer came back (``kind`` is then
    ``connection_error``, ``timeout`` or ``bad_response``). Adapters also raise it with their own
    kinds: ``group_incomplete`` (a group did not finish within ``wait_s``) and
    ``episode_not_finished``.
    """

    def __init__(
        self,
        kind: str,
        status: int,
        message: str,
        *,
        retryable: bool = False,
        retry_after_s: float | None = None,
        episode_id: str | None = None,
        group_id: str | None = None,
        body: Any = None,
        attempts: int = 1,
    ) -> None:
        self.kind = kind
        self.status = status
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.episode_id = episode_id
        self.group_id = group_id
        self.body = body
        self.attempts = attempts
        where = f"HTTP {status}" if status else "no HTTP answer"
        ids = "".join(
            f", {k} {v}" for k, v in (("episode", episode_id), ("group", group_id)) if v
        )
        tries = f", after {attempts} attempts" if attempts > 1 else ""
        super().__init__(f"{kind} ({where}{ids}{tries}): {message}")

    @classmethod
    def from_http(
        cls, status: int, raw: bytes, headers: Mapping[str, str] | None = None
    ) -> "TherapyGymError":
        """Parses the error envelope; a body that is not the envelope still gives a typed error."""
        text = raw.decode("utf-8", errors="replace")
        try:
            body = json.loads(text) if text.strip() else None
        except ValueError:
            body = None
        retry_after = _parse_retry_after((headers or {}).get("Retry-After"))
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and isinstance(err.get("kind"), str):
            if retry_after is None and isinstance(err.get("retry_after_s"), (int, float)):
                retry_after = float(err["retry_after_s"])
            return cls(
                err["kind"],
                status,
                str(err.get("message", "")),
                retryable=bool(err.get("retryable", False)),
                retry_after_s=retry_after,
                episode_id=err.get("episode_id"),
                group_id=err.get("group_id"),
                body=body,
            )
        snippet = " ".join(text.split())[:300] or "(empty body)"
        return cls(
            "http_error",
            status,
            f"the answer is not the TherapyGym error envelope: {snippet}",
            retryable=status in _RETRYABLE_STATUSES,
            retry_after_s=retry_after,
            body=body if body is not None else text,
        )


def _parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _quote(id_: str) -> str:
    return urllib.parse.quote(str(id_), safe=_ID_SAFE)


class TherapyGymClient:
    """Blocking JSON-over-HTTP client for one ``therapygym serve``.

    ``base_url`` defaults to ``$THERAPYGYM_URL``, else ``http://127.0.0.1:8700``.
    ``timeout_s`` bounds one HTTP request: a step waits for the simulated patient and a final step
    also for the judge (which the service itself retries for minutes), so the default is long.
    ``max_retries`` retryable answers or connection failures are retried per call.
    The client is thread-safe (no shared connection state) and picklable (Ray actors).
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout_s: float = 900.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_retry_after_s: float = 300.0,
        retry_connection_errors: bool = True,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        url = base_url or os.environ.get(ENV_URL) or DEFAULT_URL
        if "://" not in url:
            url = "http://" + url
        self.base_url = url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self.retry_connection_errors = retry_connection_errors
        self.sleep = sleep

    def __repr__(self) -> str:
        return f"TherapyGymClient({self.base_url!r})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_opener_cache", None)
        if state.get("sleep") is time.sleep:
            state["sleep"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        if state.get("sleep") is None:
            state["sleep"] = time.sleep
        self.__dict__.update(state)

    # ------------------------------------------------------------------------------------------
    # transport

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> Any:
        """One call with retries; returns the decoded JSON body (``None`` for 204)."""
        url = self.base_url + path
        if query:
            q = {k: v for k, v in query.items() if v is not None}
            if q:
                url += "?" + urllib.parse.urlencode(q)
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json"
        timeout = self.timeout_s if timeout_s is None else timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._once(method, url, data, headers, timeout)
            except TherapyGymError as err:
                err.attempts = attempt
                if not err.retryable or attempt > self.max_retries:
                    if attempt > 1:
                        # Re-raise with the attempt count in the message.
                        raise TherapyGymError(
                            err.kind,
                            err.status,
                            err.message,
                            retryable=err.retryable,
                            retry_after_s=err.retry_after_s,
                            episode_id=err.episode_id,
                            group_id=err.group_id,
                            body=err.body,
                            attempts=attempt,
                        ) from None
                    raise
                delay = self._delay(attempt, err.retry_after_s)
                logger.warning(
                    "therapygym: %s %s answered %s (%s); retry %d/%d in %.1f s",
                    method,
                    path,
                    err.status or "no answer",
                    err.kind,
                    attempt,
                    self.max_retries,
                    delay,
                )
                self.sleep(delay)

    def _opener(self) -> urllib.request.OpenerDirector:
        opener = self.__dict__.get("_opener_cache")
        if opener is None:
            host = (urllib.parse.urlsplit(self.base_url).hostname or "").lower()
            loopback = host in ("localhost", "::1") or host.startswith("127.")
            # A service on this machine never goes through an HTTP proxy from the environment.
            handlers = [urllib.request.ProxyHandler({})] if loopback else []
            opener = urllib.request.build_opener(*handlers)
            self.__dict__["_opener_cache"] = opener
        return opener

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s)
        base = min(self.backoff_s * (2 ** (attempt - 1)), self.max_backoff_s)
        return base + random.uniform(0.0, 0.1 * base)

    def _once(self, method: str, url: str, data: bytes | None, headers: dict, timeout: float):
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener().open(req, timeout=timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            try:
                raw = e.read()
            except (OSError, http.client.HTTPException):
                raw = b""
            raise TherapyGymError.from_http(e.code, raw, e.headers) from None
        except (socket.timeout, TimeoutError) as e:
            raise TherapyGymError(
                "timeout",
                0,
                f"{method} {url}: no answer within {timeout:.0f} s ({e})",
                retryable=self.retry_connection_errors,
            ) from None
        except (urllib.error.URLError, ConnectionError, http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, (socket.timeout, TimeoutError)):
                kind = "timeout"
            else:
                kind = "connection_error"
            raise TherapyGymError(
                kind,
                0,
                f"{method} {url}: {reason} (is `therapygym serve` running at {self.base_url}?)",
                retryable=self.retry_connection_errors,
            ) from None
        if status == 204 or not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except ValueError:
            raise TherapyGymError(
                "bad_response",
                status,
                f"{method} {url}: the answer is not JSON: {raw[:200]!r}",
            ) from None

    # ------------------------------------------------------------------------------------------
    # metadata

    def health(self) -> dict:
        """``GET /healthz``."""
        return self.request("GET", "/healthz", timeout_s=min(self.timeout_s, 30.0))

    def info(self) -> dict:
        """``GET /v1/info``: protocol, rubric, taxonomy, models, config hash, group size."""
        return self.request("GET", "/v1/info", timeout_s=min(self.timeout_s, 30.0))

    # ------------------------------------------------------------------------------------------
    # env-step episodes

    def create_episode(
        self,
        profile_id: str,
        seed: int,
        *,
        episode_id: str | None = None,
        group_id: str | None = None,
        split: str | None = None,
        limits: Mapping[str, Any] | None = None,
        opening: str | None = None,
    ) -> dict:
        """``POST /v1/episodes`` (idempotent for the same id and task)."""
        task: dict[str, Any] = {"profile_id": str(profile_id), "seed": int(seed)}
        if split:
            task["split"] = split
        body: dict[str, Any] = {"task": task}
        if episode_id:
            body["episode_id"] = episode_id
        if group_id:
            body["group_id"] = group_id
        if limits:
            body["limits"] = {k: v for k, v in dict(limits).items() if v is not None}
        if opening:
            body["opening"] = opening
        return self.request("POST", "/v1/episodes", body)

    def step(
        self,
        episode_id: str,
        content: str,
        turn: int,
        *,
        finish_reason: str | None = None,
    ) -> dict:
        """``POST /v1/episodes/{id}/step`` with therapist turn ``turn`` (1-based).

        Re-posting an answered turn with the same content returns the stored answer, so the
        retries here never sample the patient twice.
        """
        body: dict[str, Any] = {
            "assistant": {"role": "assistant", "content": content},
            "turn": int(turn),
        }
        if finish_reason:
            body["finish_reason"] = finish_reason
        return self.request("POST", f"/v1/episodes/{_quote(episode_id)}/step", body)

    def score_episode(self, episode_id: str) -> dict:
        """``POST /v1/episodes/{id}/score``: the final reward again (cached)."""
        return self.request("POST", f"/v1/episodes/{_quote(episode_id)}/score", {})

    def delete_episode(self, episode_id: str) -> None:
        """``DELETE /v1/episodes/{id}`` (204 also for unknown or expired ids)."""
        self.request("DELETE", f"/v1/episodes/{_quote(episode_id)}")

    def get_episode(self, episode_id: str) -> dict:
        """``GET /v1/episodes/{id}``: the episode's opening as create answered it (no side
        effects, safe to retry)."""
        return self.request("GET", f"/v1/episodes/{_quote(episode_id)}")

    def abandon_episode(self, episode_id: str, reason: str | None = None) -> dict:
        """``POST /v1/episodes/{id}/abandon``: the engine ended the episode before the service
        did; the member is masked (``reward`` None, status ``abandoned``) and its group can
        complete. Idempotent; a finished episode answers its outcome unchanged."""
        body = {"reason": reason} if reason else {}
        return self.request("POST", f"/v1/episodes/{_quote(episode_id)}/abandon", body)

    def abandon_in_group(
        self,
        group_id: str,
        *,
        turns: int | None = None,
        response: str | None = None,
        at_most: int | None = None,
        scope: str | None = None,
        task: Mapping[str, Any] | None = None,
        reason: str | None = None,
    ) -> dict:
        """``POST /v1/groups/{id}/abandon``: abandons the group's members in progress that have
        ``turns`` therapist turns and whose turns all occur in ``response`` (all of them without
        filters); none when more than ``at_most`` match (``ambiguous``). ``scope="task"`` searches
        every group of ``task`` (``{"profile_id", "seed"}``; default: the group's own task)."""
        body: dict[str, Any] = {}
        for k, v in (("turns", turns), ("response", response), ("at_most", at_most), ("scope", scope), ("task", dict(task) if task else None), ("reason", reason)):
            if v is not None:
                body[k] = v
        return self.request("POST", f"/v1/groups/{_quote(group_id)}/abandon", body)

    def group(
        self,
        group_id: str,
        *,
        wait_s: float | None = None,
        group_size: int | None = None,
    ) -> dict:
        """``GET /v1/groups/{group_id}?wait_s=N``: members, rewards, ``scored_mean``, ``complete``."""
        query: dict[str, Any] = {}
        if wait_s is not None:
            query["wait_s"] = f"{max(0.0, float(wait_s)):g}"
        if group_size is not None:
            query["group_size"] = int(group_size)
        timeout = (float(wait_s) if wait_s else 0.0) + 60.0
        return self.request(
            "GET", f"/v1/groups/{_quote(group_id)}", query=query, timeout_s=timeout
        )

    # ------------------------------------------------------------------------------------------
    # scoring and the driver

    def score(self, items: Sequence[Mapping[str, Any]]) -> list[dict]:
        """``POST /v1/score``: one result per item, in order (``reward`` None when unscored)."""
        out = self.request("POST", "/v1/score", {"items": [dict(i) for i in items]})
        return out["results"]

    def get_reward(
        self,
        query: Sequence[str],
        prompts: Sequence[str] | None = None,
        labels: Sequence[Any] | None = None,
    ) -> dict:
        """``POST /get_reward`` (OpenRLHF's remote reward protocol)."""
        body: dict[str, Any] = {"query": list(query)}
        if prompts is not None:
            body["prompts"] = list(prompts)
        if labels is not None:
            body["labels"] = list(labels)
        return self.request("POST", "/get_reward", body)

    def rollout(
        self,
        policy: Mapping[str, Any],
        profile_id: str,
        seed: int,
        *,
        episode_id: str | None = None,
        group_id: str | None = None,
        split: str | None = None,
        limits: Mapping[str, Any] | None = None,
        opening: str | None = None,
    ) -> dict:
        """``POST /v1/rollouts`` (driver mode: the service plays the whole session)."""
        task: dict[str, Any] = {"profile_id": str(profile_id), "seed": int(seed)}
        if split:
            task["split"] = split
        body: dict[str, Any] = {"policy": dict(policy), "task": task}
        if episode_id:
            body["episode_id"] = episode_id
        if group_id:
            body["group_id"] = group_id
        if limits:
            body["limits"] = {k: v for k, v in dict(limits).items() if v is not None}
        if opening:
            body["opening"] = opening
        return self.request("POST", "/v1/rollouts", body)
