"""The OpenAI-compatible API measured against peers, on the real model (SmolLM2-135M through llama.cpp).

Row group 1, the load generator against AIPerf (NVIDIA's LLM benchmark, PyPI `aiperf`, in its own virtual
environment: bench/_peers.py). Both send the same workload to the same embedded model server's
`/v1/chat/completions`, streamed: the same prompts in the same order (a JSON Lines file each tool reads), the
same output length asked per request, the same constant arrival rate and request count. Rounds alternate
(labkit, AIPerf, labkit, AIPerf, ...); the two tools never run at once. Each row is the median over rounds of
the per-round median: TTFT from the request's send to its first content token (labkit's `ttft_s` minus its
`queue_delay_s`, so both count from the actual send); ITL per request (labkit: the mean gap between content
chunks; AIPerf: (latency - TTFT) / (output tokens - 1)); output tokens/s per user = 1 / ITL (AIPerf's
`output_token_throughput_per_user`, the same definition on both sides). AIPerf counts tokens with a Hugging
Face tokenizer; with no Hub here, bench/peers/gguf_tokenizer.py writes one from the GGUF file, and this suite
checks it token for token against llama.cpp's tokenizer on the workload's prompts before using it.

guidellm (the other peer the field uses) is not run: 0.8 requires torch, a ~6 GB environment where AIPerf's
is ~1.2 GB, and both need the same offline tokenizer; the row notes say so.

Row 2, the wrapper in front of llama-cpp-python's own OpenAI-compatible server (`--backend-api openai`)
against that server direct: output tokens/s of the same streamed chat request (same prompt, seed,
temperature 0), calls alternating direct / through the wrapper, one warm-up each.

`--smoke` runs labkit's side and the wrapper row with tiny parameters and no AIPerf (installing it takes
minutes and 1.2 GB): the peer rows then have no reference.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from bench._common import (
    LABKIT,
    PYTHON,
    ROOT,
    Row,
    Target,
    children,
    free_ports,
    log_tail,
    median,
    model_server_argv,
    spread,
    wait_http,
)
from bench._peers import PEERS_HOME, folder_mb, peer_venv
from labkit.config import embedded_model_path
from labkit.services.modelserver._settings import default_threads

AIPERF = ["aiperf==0.13.0", "gguf==0.19.0"]
MODEL = "smollm2:135m"
N_CTX = 2048
# Prompts that ask for long answers, so that most requests run to the output length they ask for.
PROMPTS = (
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Explain in detail how a web server handles a request, step by step.",
    "Describe a busy harbour at dawn, in as much detail as you can.",
    "Write a long letter from a gardener to her grandson about the seasons.",
    "Tell the history of a small mountain village over three hundred years.",
    "Explain how a train timetable is planned, with examples.",
)
TOKENIZER_REPO = "labkit/smollm2-135m-tokenizer"


def _workload(count: int, max_tokens: int, folder: Path) -> tuple[Path, Path]:
    """The same requests as labkit's prompts file and as AIPerf's single-turn dataset."""
    rows = [(PROMPTS[i % len(PROMPTS)], max_tokens) for i in range(count)]
    labkit_file, aiperf_file = folder / "labkit-prompts.jsonl", folder / "aiperf-prompts.jsonl"
    labkit_file.write_text("".join(json.dumps({"prompt": p, "max_tokens": m}) + "\n" for p, m in rows))
    aiperf_file.write_text("".join(json.dumps({"text": p, "output_length": m}) + "\n" for p, m in rows))
    return labkit_file, aiperf_file


def _labkit_round(url: str, rate: float, count: int, prompts: Path, out: Path) -> dict[str, Any]:
    argv = [
        LABKIT, "load", "--api", "openai-chat", "--url", url, "--model", MODEL,
        "--rate", str(rate), "--duration-s", str(count / rate), "--prompts", str(prompts),
        "--seed", "1", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=count / rate + 300)
    if done.returncode != 0:
        raise RuntimeError(f"labkit load failed: {done.stderr[-1500:]}")
    (requests,) = out.glob("*/requests.jsonl")
    rows = [json.loads(line) for line in requests.read_text().splitlines() if line.strip()]
    ok = [r for r in rows if r["ok"] and r["ttft_s"] is not None and r["itl_s"]]
    ttft = [(r["ttft_s"] - (r["queue_delay_s"] or 0.0)) * 1000 for r in ok]
    itl = [statistics.fmean(r["itl_s"]) * 1000 for r in ok]
    return {
        "requests": len(rows),
        "ok": len(ok),
        "ttft_ms": median(ttft),
        "itl_ms": median(itl),
        "tokens_per_s_user": median([1000 / x for x in itl]),
    }


def _tokenizer(bin_dir: Path, workdir: Path) -> dict[str, str]:
    """AIPerf's environment variables: an offline Hugging Face home holding SmolLM2's tokenizer, made from
    the GGUF file and checked token for token against llama.cpp's tokenizer on the workload's prompts."""
    from llama_cpp import Llama

    hf_home = PEERS_HOME / "hf"
    snapshot = hf_home / "hub" / f"models--{TOKENIZER_REPO.replace('/', '--')}" / "snapshots" / ("0" * 40)
    if not (snapshot / "tokenizer.json").is_file():
        subprocess.run(
            [str(bin_dir / "python"), str(ROOT / "bench" / "peers" / "gguf_tokenizer.py"),
             str(embedded_model_path()), str(snapshot)],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        refs = snapshot.parent.parent / "refs"
        refs.mkdir(exist_ok=True)
        (refs / "main").write_text("0" * 40)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    texts = workdir / "tokenizer-check.json"
    texts.write_text(json.dumps(list(PROMPTS)))
    script = (  # AIPerf's own loader (offline: it reads the snapshot folder, as a run will)
        "import json,sys\nfrom aiperf.common.tokenizer import Tokenizer\n"
        f"t=Tokenizer.from_pretrained({TOKENIZER_REPO!r})\n"
        "print(json.dumps([t.encode(x) for x in json.load(open(sys.argv[1]))]))"
    )
    got = subprocess.run(
        [str(bin_dir / "python"), "-c", script, str(texts)], env=env, capture_output=True, text=True
    )
    if got.returncode != 0:
        raise RuntimeError(f"AIPerf could not load the tokenizer made from the GGUF: {got.stderr[-1500:]}")
    llama = Llama(str(embedded_model_path()), vocab_only=True, verbose=False)
    want = [llama.tokenize(p.encode(), add_bos=False, special=True) for p in PROMPTS]
    if json.loads(got.stdout) != want:
        raise RuntimeError("the tokenizer made from the GGUF file does not match llama.cpp's; AIPerf not run")
    return env


def _aiperf_round(
    bin_dir: Path, env: dict[str, str], base: str, rate: float, count: int, dataset: Path, out: Path
) -> dict[str, Any]:
    argv = [
        str(bin_dir / "aiperf"), "profile", "-m", MODEL, "--url", base, "--endpoint-type", "chat",
        "--streaming", "--tokenizer", TOKENIZER_REPO, "--request-rate", str(rate),
        "--arrival-pattern", "constant", "--request-count", str(count), "--input-file", str(dataset),
        "--custom-dataset-type", "single_turn", "--random-seed", "1", "--output-artifact-dir", str(out),
        "--ui-type", "none", "--no-auto-plot",
    ]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=count / rate + 300)
    result_file = out / "profile_export_aiperf.json"
    if done.returncode != 0 or not result_file.is_file():
        raise RuntimeError(f"aiperf failed ({done.returncode}): {done.stdout[-1500:]} {done.stderr[-1500:]}")
    result = json.loads(result_file.read_text())
    return {
        "requests": count,
        "ok": int(result["request_count"]["avg"]) if "request_count" in result else None,
        "errors": (result.get("error_request_count") or {}).get("avg", 0),
        "ttft_ms": result["time_to_first_token"]["p50"],
        "itl_ms": result["inter_token_latency"]["p50"],
        "tokens_per_s_user": result["output_token_throughput_per_user"]["p50"],
    }


def _peer_rows(workdir: Path, smoke: bool) -> list[Row]:
    rate, count, max_tokens, rounds = (2.0, 4, 8, 1) if smoke else (0.5, 30, 64, 2)
    (port,) = free_ports(1)
    argv = model_server_argv(port, "llama", "--n-threads", str(default_threads()), "--n-ctx", str(N_CTX))
    base = f"http://127.0.0.1:{port}"
    labkit_file, aiperf_file = _workload(count, max_tokens, workdir)
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    env: dict[str, str] = {}
    bin_dir: Path | None = None
    venv_mb = None
    if not smoke:
        bin_dir = peer_venv("aiperf-0.13.0", AIPERF, workdir / "aiperf-install.log")
        venv_mb = folder_mb(bin_dir.parent)
        env = _tokenizer(bin_dir, workdir)
    with children({"model": argv}, workdir) as procs:
        wait_http(f"{base}/v1/models", 120, lambda: procs["model"].poll() is None)
        httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
            timeout=120,
        ).raise_for_status()  # warm-up: the model's first call, counted by neither tool
        for i in range(rounds):
            ours.append(_labkit_round(f"{base}/v1", rate, count, labkit_file, workdir / f"labkit-{i}"))
            if bin_dir is not None:
                theirs.append(
                    _aiperf_round(bin_dir, env, base, rate, count, aiperf_file, workdir / f"aiperf-{i}")
                )
    setup = f"{count} requests at {rate:g} req/s, {max_tokens} output tokens asked, {rounds} rounds"
    notes = "" if theirs else "smoke: AIPerf not run"
    detail = {"labkit": ours, "aiperf": theirs, "aiperf_venv_mb": venv_mb, "workload": setup}
    rows = []
    for key, what, unit in (
        ("ttft_ms", "median TTFT", "ms"),
        ("itl_ms", "median ITL", "ms"),
        ("tokens_per_s_user", "median output tokens/s per request", "tok/s"),
    ):
        values = [r[key] for r in ours]
        rows.append(
            Row(
                name=f"openai_load_vs_aiperf_{key}",
                what=f"labkit load vs AIPerf on the embedded server's /v1 chat: {what} ({setup})",
                unit=unit,
                value=median(values),
                reference=median([r[key] for r in theirs]) if theirs else None,
                reference_what="AIPerf 0.13.0, same workload" if theirs else "",
                spread=spread(values),
                target=Target("ratio_near", 0.10, "within 10 % of AIPerf"),
                notes=notes,
                detail=detail,
            )
        )
    return rows


def _stream_tokens_per_s(client: httpx.Client, url: str, tokens: int) -> float:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPTS[0]}],
        "max_tokens": tokens,
        "temperature": 0,
        "seed": 7,
        "stream": True,
    }
    start = time.perf_counter()
    count = 0
    with client.stream("POST", url, json=body) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                count += bool((choices[0].get("delta") or {}).get("content"))
    return count / (time.perf_counter() - start)


def _wrapper_row(workdir: Path, smoke: bool) -> Row:
    rounds, tokens = (1, 8) if smoke else (9, 128)
    server_port, wrapper_port = free_ports(2)
    server = [
        PYTHON, "-m", "llama_cpp.server", "--model", str(embedded_model_path()), "--model_alias", MODEL,
        "--host", "127.0.0.1", "--port", str(server_port), "--n_ctx", str(N_CTX),
        "--n_threads", str(default_threads()),
    ]  # fmt: skip
    wrapper = [
        PYTHON, "-m", "labkit.services.wrapper", "--port", str(wrapper_port),
        "--backend-url", f"http://127.0.0.1:{server_port}/v1", "--backend-api", "openai",
    ]  # fmt: skip
    direct = f"http://127.0.0.1:{server_port}/v1/chat/completions"
    wrapped = f"http://127.0.0.1:{wrapper_port}/v1/chat/completions"
    per_round: list[float] = []
    pairs: list[dict[str, float]] = []
    with (
        children({"server": server, "wrapper": wrapper}, workdir) as procs,
        httpx.Client(timeout=300) as client,
    ):
        wait_http(f"http://127.0.0.1:{server_port}/v1/models", 120, lambda: procs["server"].poll() is None)
        try:
            wait_http(f"http://127.0.0.1:{wrapper_port}/ready", 60, lambda: procs["wrapper"].poll() is None)
        except Exception as exc:
            raise RuntimeError(f"wrapper not ready: {log_tail(workdir / 'wrapper.log')}") from exc
        _stream_tokens_per_s(client, direct, tokens)
        _stream_tokens_per_s(client, wrapped, tokens)
        for i in range(rounds):
            order = [("direct", direct), ("wrapped", wrapped)]
            got = {
                name: _stream_tokens_per_s(client, url, tokens)
                for name, url in order[:: 1 if i % 2 == 0 else -1]
            }
            pairs.append(got)
            per_round.append(got["wrapped"] / got["direct"])
    return Row(
        name="wrapper_openai_upstream_tokens_per_s",
        what=f"wrapper (--backend-api openai) in front of llama-cpp-python's server: output tokens/s of a "
        f"streamed chat ({tokens} tokens, temperature 0)",
        unit="tok/s",
        value=median([p["wrapped"] for p in pairs]),
        reference=median([p["direct"] for p in pairs]),
        reference_what="the server direct",
        spread=spread(per_round),
        target=Target("ratio_min", 0.95, "ratio >= 0.95"),
        detail={"rounds": pairs},
        own_ratio=median(per_round),
    )


def run(workdir: Path, smoke: bool) -> list[Row]:
    return [*_peer_rows(workdir, smoke), _wrapper_row(workdir, smoke)]
