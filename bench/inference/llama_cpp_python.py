"""Decode speed of llama-cpp-python on the same GGUF, threads, prompt and settings as
`therapygym chat --json` (greedy, same max tokens), best of RUNS.

    python llama_cpp_python.py GGUF THREADS MAX_TOKENS RUNS PROMPT

Prints `PY_TOKENS=…`, `PY_SECONDS=…` and `PY_TOK_S=…` for the best run.
"""

import sys
import time

from llama_cpp import Llama

gguf, threads, max_tokens, runs, prompt = sys.argv[1:6]
llm = Llama(model_path=gguf, n_threads=int(threads), n_threads_batch=int(threads), n_ctx=8192, verbose=False)
best = None
for _ in range(int(runs)):
    t = time.perf_counter()
    r = llm.create_chat_completion(
        messages=[{"role": "user", "content": prompt}], max_tokens=int(max_tokens), temperature=0.0
    )
    s = time.perf_counter() - t
    n = r["usage"]["completion_tokens"]
    if best is None or n / s > best[0] / best[1]:
        best = (n, s)
print(f"PY_TOKENS={best[0]}")
print(f"PY_SECONDS={best[1]:.4f}")
print(f"PY_TOK_S={best[0] / best[1]:.2f}")
