"""The Python reference of the orchestration benchmark: the same sessions `therapygym eval`
runs, written as a Python user would write them (asyncio + the `openai` SDK).

Per session: TURNS therapist calls, each answered by a patient call (the shape of
`eval --turns TURNS`: 2 × TURNS messages), then one judge call with a JSON schema, parsed with `json.loads`; the
transcript is appended to a JSONL file as each session ends (what a user keeps). At most
CONCURRENCY sessions in flight, one shared AsyncOpenAI client (its pool raised to CONCURRENCY).

    python reference.py BASE_URL SESSIONS TURNS CONCURRENCY OUT.jsonl

Prints `PY_SECONDS=…`, `PY_SESSIONS=…` and `PY_PEAK_RSS_KB=…`.
"""

import asyncio
import json
import resource
import sys
import time

import httpx
from openai import AsyncOpenAI

SCHEMA = {
    "type": "object",
    "required": ["ctrs", "safety"],
    "properties": {
        "ctrs": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 6}},
        "safety": {"type": "object", "additionalProperties": {"type": "boolean"}},
    },
}


async def session(client, i, turns, out):
    therapist_sys = {"role": "system", "content": f"You are a CBT therapist. Session {i}."}
    patient_sys = {"role": "system", "content": f"You are patient {i}. Stay in character."}
    transcript = []
    for t in range(turns):
        msgs = [therapist_sys] + [
            {"role": "assistant" if who == "therapist" else "user", "content": text}
            for who, text in transcript
        ]
        r = await client.chat.completions.create(model="mock", messages=msgs, max_tokens=256)
        transcript.append(("therapist", r.choices[0].message.content))
        msgs = [patient_sys] + [
            {"role": "user" if who == "therapist" else "assistant", "content": text}
            for who, text in transcript
        ]
        r = await client.chat.completions.create(model="mock", messages=msgs, max_tokens=200)
        transcript.append(("patient", r.choices[0].message.content))
    text = "\n".join(f"{who}: {t}" for who, t in transcript)
    r = await client.chat.completions.create(
        model="mock",
        messages=[{"role": "system", "content": "Rate this session."}, {"role": "user", "content": text}],
        response_format={"type": "json_schema", "json_schema": {"name": "judgment", "schema": SCHEMA}},
    )
    verdict = json.loads(r.choices[0].message.content)
    out.write(json.dumps({"id": i, "transcript": transcript, "verdict": verdict}) + "\n")


async def main():
    base_url, sessions, turns, concurrency, out_path = sys.argv[1:6]
    sessions, turns, concurrency = int(sessions), int(turns), int(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = AsyncOpenAI(
        base_url=base_url,
        api_key="unused",
        max_retries=2,
        http_client=httpx.AsyncClient(limits=limits, timeout=120),
    )
    gate = asyncio.Semaphore(concurrency)

    async def one(i, out):
        async with gate:
            await session(client, i, turns, out)

    started = time.perf_counter()
    with open(out_path, "w") as out:
        await asyncio.gather(*(one(i, out) for i in range(sessions)))
    elapsed = time.perf_counter() - started
    print(f"PY_SECONDS={elapsed:.3f}")
    print(f"PY_SESSIONS={sessions}")
    print(f"PY_PEAK_RSS_KB={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")


if __name__ == "__main__":
    asyncio.run(main())
