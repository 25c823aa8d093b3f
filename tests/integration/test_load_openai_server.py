"""The load generator against a real OpenAI-compatible server: llama-cpp-python's own (`python -m
llama_cpp.server`, the `server` extra) serving SmolLM2. Every scheduled request is recorded, with TTFT and ITL
from its SSE stream; the model is found from GET /v1/models. Skipped where the server or the model is missing.

The server runs with `--interrupt_requests False`: by default it ends a running stream when a newer request
arrives (the stream closes with [DONE] but no finish_reason), which an open loop at 2 requests/s on two cores
would do to most requests. The load generator records those as `stream_cut`, not as answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from labkit.cli import cli
from labkit.config import DEFAULT_MODEL_NAME
from labkit.measure.load import LoadResult, LoadSpec, run_load, workload
from labkit.rundir import RunFile
from tests.conftest import llamacpp_server

pytestmark = [pytest.mark.integration, pytest.mark.llama]

_START_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def openai_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's server as the lab runs it, on a free loopback port: its OpenAI base URL."""
    with llamacpp_server(tmp_path_factory.mktemp("llama-server")) as url:
        yield url


def _check_every_request_has_token_timings(result: LoadResult) -> None:
    frame = result.frame
    assert len(frame) == result.scheduled > 0  # every scheduled request is a row
    assert frame["ok"].all(), frame[["error_kind", "error"]].to_dict("records")
    assert frame["ttft_s"].notna().all() and (frame["ttft_s"] > 0).all()
    assert (frame["ttft_s"] <= frame["e2e_s"]).all()
    for chunks, gaps in zip(frame["chunks"], frame["itl_s"], strict=True):
        assert chunks >= 1 and len(gaps) == chunks - 1 and all(g >= 0 for g in gaps)
    assert frame["chunks"].max() > 1  # some answer had gaps to measure
    assert set(frame["done_reason"]) <= {"stop", "length"}


def test_chat_load_records_ttft_and_itl_and_finds_the_model(openai_url: str, tmp_path: Path) -> None:
    spec = LoadSpec(
        url=openai_url, api="openai-chat", rate=2, duration_s=3, prompt_tokens="48:8", max_tokens="8:2"
    )
    result = run_load(spec, tmp_path, progress=False)
    _check_every_request_has_token_timings(result)
    assert result.model == DEFAULT_MODEL_NAME
    # Token counts come from `usage` only: this server sends none in streams (it ignores include_usage).
    counts = result.frame["output_tokens"].dropna()
    assert ((counts >= 1) & (counts <= 12)).all()
    params = result.run_dir.read_json(RunFile.PARAMS)["load"]
    assert params["workload"] == {
        "api": "openai-chat",
        "model": DEFAULT_MODEL_NAME,
        "target": f"{openai_url}/chat/completions",
        "stream": True,
        "prompts": "prompt_tokens",
        "prompt_tokens": "48:8",
        "max_tokens": "8:2",
    }
    assert result.run_dir.read_run_record()["load"] == params["workload"]


def test_completions_from_a_prompts_file(openai_url: str, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    lines = [{"prompt": "The capital of France is", "max_tokens": 6}, {"prompt": "One, two, three,"}]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    spec = LoadSpec(
        url=f"{openai_url}/completions", api="openai-completions", rate=2, duration_s=2, prompts_file=prompts
    )
    result = run_load(spec, tmp_path / "runs", progress=False)
    _check_every_request_has_token_timings(result)
    assert set(result.frame["prompt_index"]) <= {0, 1}


def test_a_whole_chat_answer_carries_its_usage(openai_url: str, tmp_path: Path) -> None:
    spec = LoadSpec(url=openai_url, api="openai-chat", rate=2, duration_s=1, stream=False, max_tokens=4)
    frame = run_load(spec, tmp_path, progress=False).frame
    assert frame["ok"].all() and frame["ttft_s"].isna().all()
    assert ((frame["output_tokens"] >= 1) & (frame["output_tokens"] <= 4)).all()
    assert (frame["prompt_tokens"] > 0).all()


def test_the_cli_loads_an_openai_server(openai_url: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            *("load", "--api", "openai-chat", "--url", openai_url, "--rate", "2", "--duration", "3"),
            *("--max-tokens", "8", "--no-progress", "--out", str(tmp_path)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert f"api openai-chat  model {DEFAULT_MODEL_NAME}" in result.output
    (run_dir,) = tmp_path.iterdir()
    rows = [json.loads(line) for line in (run_dir / RunFile.REQUESTS).read_text().splitlines()]
    assert len(rows) == 6 and all(r["ok"] and r["ttft_s"] is not None for r in rows)


def test_synthetic_prompts_are_their_token_count_to_the_server(openai_url: str, tmp_path: Path) -> None:
    # The server's own count of a text completion's prompt: exactly the tokens asked for.
    spec = LoadSpec(
        url=openai_url,
        api="openai-completions",
        rate=4,
        duration_s=1,
        stream=False,
        prompt_tokens="24:6",
        max_tokens=1,
        seed=5,
    )
    result = run_load(spec, tmp_path, progress=False)
    work = workload(spec)
    bodies = [json.loads(work.next()[1]) for _ in range(len(result.frame))]
    asked = [len(body["prompt"].split()) for body in bodies]
    assert result.frame["ok"].all() and len(set(asked)) > 1
    assert result.frame["prompt_tokens"].tolist() == asked
