"""The embedded model server on the real model (SmolLM2-135M through llama-cpp-python): output tokens per
second through its Ollama API, next to llama-cpp-python called in this process with the same model file,
prompt, context size, threads, sampling settings and seed.

Method: the server runs as a child process; calls alternate (server streamed, server non-streamed,
in-process; one warm-up each, not counted); the two sides never run at once. Tokens/s = output tokens /
wall time from sending the request (or calling `create_completion`) to the last token, prompt evaluation
included on both sides. Same seed and settings, so both sides generate the same tokens.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from bench._common import Row, Target, children, free_port, median, model_server_argv, spread, wait_http
from labkit.config import embedded_model_path
from labkit.services.modelserver._settings import default_threads

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
N_CTX = 2048
SEED = 7
TEMPERATURE = 0.8
OPTIONS = {"num_predict": 0, "temperature": TEMPERATURE, "top_p": 0.9, "top_k": 40, "seed": SEED}


def _server_call(client: httpx.Client, url: str, stream: bool, tokens: int) -> tuple[int, float]:
    body = {
        "model": "smollm2:135m",
        "prompt": PROMPT,
        "stream": stream,
        "options": OPTIONS | {"num_predict": tokens},
    }
    start = time.perf_counter()
    final: dict[str, Any] = {}
    with client.stream("POST", url, json=body) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.strip():
                final = json.loads(line)
    elapsed = time.perf_counter() - start
    return int(final["eval_count"]), elapsed


def _in_process(llama: Any, tokens: int) -> tuple[int, float]:
    """llama-cpp-python's own chat API: it renders the GGUF chat template, as the server's /api/generate
    does for a prompt that is not `raw`."""
    start = time.perf_counter()
    out = llama.create_chat_completion(
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=TEMPERATURE,
        top_p=0.9,
        top_k=40,
        repeat_penalty=1.1,
        seed=SEED,
        stream=True,
    )
    count = 0
    for chunk in out:
        if chunk["choices"][0]["delta"].get("content"):
            count += 1
    return count, time.perf_counter() - start


def run(workdir: Path, smoke: bool) -> list[Row]:
    from llama_cpp import Llama

    rounds, tokens = (1, 16) if smoke else (12, 128)
    threads = default_threads()
    port = free_port()
    argv = model_server_argv(
        port, "llama", "--n-threads", str(threads), "--n-ctx", str(N_CTX), "--seed", str(SEED)
    )
    url = f"http://127.0.0.1:{port}/api/generate"
    with children({"model": argv}, workdir) as procs:
        wait_http(f"http://127.0.0.1:{port}/api/tags", 120, alive=lambda: procs["model"].poll() is None)
        llama = Llama(
            model_path=str(embedded_model_path()),
            n_ctx=N_CTX,
            n_threads=threads,
            n_threads_batch=threads,
            seed=SEED,
            verbose=False,
        )
        try:
            with httpx.Client(timeout=300, trust_env=False) as client:
                # Warm-up: loads the server's model and touches every page on both sides.
                _server_call(client, url, True, tokens)
                _in_process(llama, tokens)
                samples: dict[str, list[tuple[int, float]]] = {"stream": [], "nostream": [], "inproc": []}
                for _ in range(rounds):
                    samples["stream"].append(_server_call(client, url, True, tokens))
                    samples["inproc"].append(_in_process(llama, tokens))
                    samples["nostream"].append(_server_call(client, url, False, tokens))
        finally:
            llama.close()

    def rate(pairs: list[tuple[int, float]]) -> list[float]:
        return [n / s for n, s in pairs]

    inproc = rate(samples["inproc"])
    rows = []
    for key, kind in (("stream", "streamed"), ("nostream", "non-streamed")):
        server = rate(samples[key])
        per_round = [s / i for s, i in zip(server, inproc, strict=True)]
        rows.append(
            Row(
                name=f"embedded_tokens_per_s_{key}",
                what=f"embedded model server, real SmolLM2-135M: output tokens/s via /api/generate ({kind})",
                unit="tokens/s",
                value=median(server),
                reference=median(inproc),
                reference_what="llama-cpp-python in-process, same model, prompt, settings and seed",
                spread=spread(per_round) | {"of": "ratio"},
                target=Target("ratio_min", 0.98, ">= 0.98 x in-process"),
                detail={
                    "tokens_per_request": tokens,
                    "n_threads": threads,
                    "server_tokens": [n for n, _ in samples[key]],
                    "in_process_tokens": [n for n, _ in samples["inproc"]],
                },
            )
        )
    return rows
