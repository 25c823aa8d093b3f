"""What a load run asks for: token-count distributions (seeded, clipped), synthetic prompts of an exact token
length (checked with SmolLM2's real tokenizer), prompts files (each error at its file:line), and the request
bodies of each API.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import statistics
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from labkit.cli import cli
from labkit.errors import ConfigError, ModelNotFoundError
from labkit.measure.load import (
    API_ENDPOINTS,
    DEFAULT_PROMPTS,
    LOAD_APIS,
    LoadSpec,
    PromptEntry,
    TokenDistribution,
    prompt_choices,
    read_prompts_file,
    synthetic_prompt,
    workload,
    wrapper_api_url,
)
from labkit.measure.load._words import ONE_TOKEN_WORDS

URL = "http://127.0.0.1:8000"


def _spec(**overrides: Any) -> LoadSpec:
    return LoadSpec(**({"url": URL, "rate": 10.0, "duration_s": 5.0} | overrides))


def _bodies(spec: LoadSpec, count: int, model: str | None = None) -> list[dict[str, Any]]:
    work = workload(spec, model=model)
    return [json.loads(work.next()[1]) for _ in range(count)]


def _write(tmp_path: Path, lines: list[str], name: str = "prompts.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---- distributions -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "mean", "stddev"),
    [("128", 128, 0), ("128:32", 128, 32), (" 12.5 : 0.5 ", 12.5, 0.5), ("1", 1, 0)],
)
def test_mean_and_stddev_parse_from_text(text: str, mean: float, stddev: float) -> None:
    assert TokenDistribution.parse(text) == TokenDistribution(mean=mean, stddev=stddev)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("abc", r"'abc' is not MEAN\[:STDDEV\]"),
        ("10:-1", r"is not MEAN\[:STDDEV\]"),
        ("0:3", r"mean: Input should be greater than or equal to 1"),
        ("", r"is not MEAN\[:STDDEV\]"),
    ],
)
def test_a_bad_distribution_says_the_form(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TokenDistribution.parse(text)


def test_draws_are_seeded_rounded_and_clipped_to_one() -> None:
    wide = TokenDistribution(mean=3, stddev=20)

    def draws(seed: int) -> list[int]:
        rng = random.Random(seed)
        return [wide.draw(rng) for _ in range(500)]

    first = draws(5)
    assert first == draws(5) != draws(6)
    assert all(isinstance(n, int) and n >= 1 for n in first)
    assert first.count(1) > 100  # about half the normal's mass is below 1: clipped there, not dropped


def test_draws_follow_the_mean_and_spread() -> None:
    rng = random.Random(1)
    draws = [TokenDistribution(mean=200, stddev=20).draw(rng) for _ in range(4000)]
    assert statistics.mean(draws) == pytest.approx(200, abs=2)
    assert statistics.stdev(draws) == pytest.approx(20, rel=0.1)
    assert {TokenDistribution(mean=7).draw(rng) for _ in range(50)} == {7}


def test_max_tokens_takes_a_count_or_a_distribution() -> None:
    assert _spec(max_tokens="48").max_tokens == 48
    assert _spec(max_tokens="48:0").max_tokens == 48
    assert _spec(max_tokens="48:6").max_tokens == TokenDistribution(mean=48, stddev=6)
    assert _spec(max_tokens=None).max_tokens is None
    for bad, match in [(0, r"0 tokens is outside \[1, "), (True, "not a token count"), ("x:1", "MEAN")]:
        with pytest.raises(ConfigError, match=rf"max_tokens \(--max-tokens\): .*{match}"):
            _spec(max_tokens=bad)


def test_a_spec_dumped_and_read_again_is_the_same_spec() -> None:
    spec = _spec(api="openai-chat", max_tokens="40:10", prompt_tokens="128:16", model="m")
    assert LoadSpec(**spec.model_dump()) == spec
    assert LoadSpec(**json.loads(json.dumps(spec.model_dump(mode="json")))) == spec


# ---- the workload --------------------------------------------------------------------------------
def test_the_same_spec_makes_the_same_workload() -> None:
    spec = _spec(prompt_tokens="30:10", max_tokens="20:5", seed=3)
    assert _bodies(spec, 40) == _bodies(spec, 40)
    other_seed = _bodies(spec.model_copy(update={"seed": 4}), 40)
    assert other_seed != _bodies(spec, 40)


def test_changing_the_answer_lengths_keeps_the_prompts() -> None:
    one = _bodies(_spec(prompt_tokens="30:10", max_tokens="20:5"), 30)
    two = _bodies(_spec(prompt_tokens="30:10", max_tokens="90:1"), 30)
    assert [b["prompt"] for b in one] == [b["prompt"] for b in two]
    assert [b["max_tokens"] for b in one] != [b["max_tokens"] for b in two]


def test_synthetic_prompts_have_the_drawn_lengths() -> None:
    bodies = _bodies(_spec(prompt_tokens="50:15", seed=9), 300)
    lengths = [len(b["prompt"].split()) for b in bodies]
    assert min(lengths) >= 1 and statistics.mean(lengths) == pytest.approx(50, abs=3)
    assert len(set(lengths)) > 10
    assert all(word in ONE_TOKEN_WORDS for b in bodies for word in b["prompt"].split())
    fixed = _bodies(_spec(prompt_tokens=64), 20)
    assert {len(b["prompt"].split()) for b in fixed} == {64}


def test_max_tokens_drawn_per_request_clipped_to_one() -> None:
    values = [b["max_tokens"] for b in _bodies(_spec(max_tokens="4:10"), 400)]
    assert min(values) == 1 and all(isinstance(v, int) for v in values)
    assert len(set(values)) > 5


def test_a_synthetic_prompt_is_numbered_as_its_request() -> None:
    assert prompt_choices(_spec(prompt_tokens=8), 5) == [0, 1, 2, 3, 4]


def test_fixed_prompts_are_chosen_as_before() -> None:
    # The default prompts and the choice sequence of earlier versions: old seeds pick the same prompts.
    rng = random.Random("labkit.measure.load.prompts:0")
    expected = [rng.randrange(len(DEFAULT_PROMPTS)) for _ in range(20)]
    assert prompt_choices(_spec(), 20) == expected
    bodies = _bodies(_spec(), 20)
    assert [b["prompt"] for b in bodies] == [DEFAULT_PROMPTS[i] for i in expected]


@pytest.mark.parametrize(
    ("overrides", "flags"),
    [
        (
            {"prompts": ["a"], "prompt_tokens": 5},
            r"prompts \(--prompt\) and prompt_tokens \(--prompt-tokens\)",
        ),
        ({"prompt_tokens": 5, "prompts_file": "FILE"}, r"prompt_tokens \(--prompt-tokens\) and prompts_file"),
        ({"prompts": ["a"], "prompts_file": "FILE"}, r"prompts \(--prompt\) and prompts_file \(--prompts\)"),
    ],
)
def test_prompt_sources_are_mutually_exclusive(tmp_path: Path, overrides: dict[str, Any], flags: str) -> None:
    path = _write(tmp_path, ['{"prompt": "hi"}'])
    values = {k: (path if v == "FILE" else v) for k, v in overrides.items()}
    with pytest.raises(ConfigError, match=flags + ".*mutually exclusive"):
        _spec(**values)


# ---- prompts files -------------------------------------------------------------------------------
def test_a_prompts_file_gives_its_entries_and_their_max_tokens(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            '{"prompt": "first", "max_tokens": 5}',
            "",
            '{"messages": [{"role": "system", "content": "be brief"}, '
            '{"role": "user", "content": "second"}]}',
        ],
    )
    entries = read_prompts_file(path, "openai-chat")
    assert entries[0] == PromptEntry(prompt="first", max_tokens=5)
    assert entries[1].messages is not None and entries[1].messages[1].content == "second"
    bodies = _bodies(_spec(api="openai-chat", prompts_file=path, max_tokens=99, seed=2), 40, model="m")
    for body in bodies:
        if body["messages"][-1]["content"] == "first":
            assert body["max_tokens"] == 5 and body["messages"] == [{"role": "user", "content": "first"}]
        else:
            assert body["max_tokens"] == 99 and body["messages"][0] == {
                "role": "system",
                "content": "be brief",
            }
    assert {b["messages"][-1]["content"] for b in bodies} == {"first", "second"}


@pytest.mark.parametrize(
    ("lines", "where", "match"),
    [
        (['{"prompt": "ok"}', "{not json"], 2, "not JSON"),
        (['["a list"]'], 1, "a JSON list, not an object"),
        (['{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}'], 1, "exactly one of them"),
        (["{}"], 1, "exactly one of them"),
        (
            ['{"prompt": "ok"}', "", '{"prompt": "x", "max_tokens": 0}'],
            3,
            "max_tokens: Input should be greater",
        ),
        (['{"prompt": "x", "temperature": 1}'], 1, "temperature: unknown field"),
        (['{"prompt": "   "}'], 1, "blank"),
        (['{"messages": [{"content": "no role"}]}'], 1, r"messages\[0\]\.role: Field required"),
        (['{"messages": [{"role": "user", "content": "hi"}]}'], 1, r"need --api openai-chat"),
    ],
)
def test_a_bad_prompts_file_names_its_file_and_line(
    tmp_path: Path, lines: list[str], where: int, match: str
) -> None:
    path = _write(tmp_path, lines)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:{where}: .*{match}"):
        read_prompts_file(path, "generate")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}:{where}: "):  # before anything runs
        _spec(prompts_file=path)


def test_an_empty_or_missing_prompts_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"holds no prompt; each line is one JSON object"):
        read_prompts_file(_write(tmp_path, ["", "  "]), "generate")
    with pytest.raises(ConfigError, match=r"cannot read the prompts file .*missing.jsonl"):
        read_prompts_file(tmp_path / "missing.jsonl", "generate")


# ---- the APIs' bodies and URLs -------------------------------------------------------------------
def test_each_api_has_its_endpoint_and_the_wrapper_url() -> None:
    assert LOAD_APIS == ("generate", "openai-chat", "openai-completions")
    assert wrapper_api_url("http://127.0.0.1:8000/", "generate") == "http://127.0.0.1:8000"
    assert wrapper_api_url("http://127.0.0.1:8000", "openai-chat") == "http://127.0.0.1:8000/v1"
    for api in LOAD_APIS:
        spec = _spec(api=api, url=wrapper_api_url(URL, api))
        assert spec.target == wrapper_api_url(URL, api) + API_ENDPOINTS[api]
        # a URL pasted with its endpoint is the same target
        assert _spec(api=api, url=spec.target + "/").target == spec.target


def test_the_openai_apis_stream_by_default_and_ask_for_usage() -> None:
    assert _spec().stream is False
    chat = _spec(api="openai-chat", url=URL + "/v1", options={"temperature": 0, "seed": 1})
    assert chat.stream is True
    (body,) = _bodies(chat, 1, model="smollm2:135m")
    assert body["model"] == "smollm2:135m" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"] == [{"role": "user", "content": body["messages"][0]["content"]}]
    assert body["temperature"] == 0 and body["seed"] == 1 and body["max_tokens"] == 32
    (text,) = _bodies(_spec(api="openai-completions", stream=False), 1, model="m")
    assert set(text) == {"model", "prompt", "max_tokens", "stream"} and text["stream"] is False


def test_generate_bodies_are_the_wrappers() -> None:
    (body,) = _bodies(_spec(options={"temperature": 0}), 1)
    assert set(body) == {"prompt", "stream", "max_tokens", "options"}
    (named,) = _bodies(_spec(model="other:1b", max_tokens=None), 1)
    assert named["model"] == "other:1b" and "max_tokens" not in named


def test_cli_refuses_two_prompt_sources_before_sending(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            *("load", "--url", "http://127.0.0.1:1/v1", "--api", "openai-chat", "--rate", "1"),
            *("--duration-s", "1", "--prompt", "hi", "--prompt-tokens", "12", "--out", str(tmp_path)),
        ],
    )
    assert result.exit_code == 1
    assert "--prompt" in result.output and "--prompt-tokens" in result.output
    assert "mutually exclusive" in result.output
    assert not list(tmp_path.iterdir())  # no run directory: nothing was sent


def test_cli_names_the_bad_line_of_a_prompts_file(tmp_path: Path) -> None:
    path = _write(tmp_path, ['{"prompt": "ok"}', '{"prompt": 3}'])
    result = CliRunner().invoke(
        cli,
        [
            *("load", "--url", URL, "--rate", "1", "--duration-s", "1"),
            *("--prompts", str(path), "--out", str(tmp_path / "runs")),
        ],
    )
    assert result.exit_code == 1 and f"{path}:2: prompt: Input should be a valid string" in result.output


# ---- the real tokenizer --------------------------------------------------------------------------
def _tokenizer() -> Any:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install labkit[llama])")
    from labkit.config import embedded_model_path

    try:
        path = embedded_model_path()
    except ModelNotFoundError as exc:
        pytest.skip(str(exc))
    import llama_cpp

    return llama_cpp.Llama(str(path), vocab_only=True, verbose=False)


@pytest.mark.llama
def test_every_word_is_one_token_in_smollm2() -> None:
    llm = _tokenizer()
    for word in ONE_TOKEN_WORDS:
        for form in (word, " " + word):
            assert len(llm.tokenize(form.encode(), add_bos=False)) == 1, form


@pytest.mark.llama
def test_synthetic_prompts_are_exactly_their_token_count_in_smollm2() -> None:
    llm = _tokenizer()
    rng = random.Random(11)
    for tokens in (1, 2, 7, 64, 500, 3000):
        prompt = synthetic_prompt(rng, tokens)
        assert len(llm.tokenize(prompt.encode(), add_bos=False)) == tokens
    # ... also inside SmolLM2's chat template, where the text follows a newline
    prompt = synthetic_prompt(rng, 100)
    assert (
        len(llm.tokenize(f"user\n{prompt}".encode(), add_bos=False))
        == len(llm.tokenize(b"user\n", add_bos=False)) + 100
    )
