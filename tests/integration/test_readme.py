"""README's examples are executed against a real lab: the curl POST and the ollama client snippet."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from labkit.lab.local import LocalBackend

pytestmark = pytest.mark.integration

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_documents_generate_as_a_post() -> None:
    curl = [b for b in _blocks("bash") if "/generate" in b and b.lstrip().startswith("curl")]
    assert len(curl) == 1
    assert "-X POST" in curl[0]
    assert "?prompt=" not in README


def test_readme_curl_example_works(running_lab: LocalBackend) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    block = next(b for b in _blocks("bash") if b.lstrip().startswith("curl") and "/generate" in b)
    command = block.replace("\\\n", " ").replace(
        "127.0.0.1:8000", f"127.0.0.1:{running_lab.config.wrapper_port}"
    )
    result = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["response"]
    assert body["output_tokens"] == 32
    assert set(body) >= {"model", "done_reason", "prompt_tokens", "time_to_first_token_seconds"}


def test_readme_ollama_client_example_works(running_lab: LocalBackend) -> None:
    block = next(b for b in _blocks("python") if "ollama.Client" in b)
    code = block.replace("127.0.0.1:11434", f"127.0.0.1:{running_lab.config.model_port}")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)


def test_readme_measurement_example_works(running_lab: LocalBackend, tmp_path: Path) -> None:
    block = next(b for b in _blocks("python") if "run_load" in b)
    cfg = running_lab.config
    code = (
        block.replace("127.0.0.1:8000", f"127.0.0.1:{cfg.wrapper_port}")
        .replace("127.0.0.1:9090", f"127.0.0.1:{cfg.prometheus_port}")
        .replace('"reports/runs"', repr(str(tmp_path)))
    )
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    frame = namespace["frame"]
    assert len(frame) == 20 and bool(frame["ok"].all())  # type: ignore[attr-defined]


def test_readme_fault_api_example_works(running_lab: LocalBackend) -> None:
    block = next(b for b in _blocks("bash") if "/admin/faults" in b)
    script = block.replace("~/.local/state/labkit", str(running_lab.lab.root)).replace(
        "127.0.0.1:8000", f"127.0.0.1:{running_lab.config.wrapper_port}"
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    decoder, text, bodies = json.JSONDecoder(), result.stdout, []
    while text.strip():  # curl prints the three bodies back to back, without newlines
        body, end = decoder.raw_decode(text.strip())
        bodies.append(body)
        text = text.strip()[end:]
    created, listed, ended = bodies
    assert created["kind"] == "latency" and created["params"]["delay_s"] == 1.5
    assert [f["id"] for f in listed["faults"]] == [created["id"]]
    assert ended["ended"] == 1


def test_readme_experiment_file_is_valid(tmp_path: Path) -> None:
    from labkit.chaos import load_experiment_file

    (block,) = [b for b in _blocks("yaml") if "remediation:" in b]
    path = tmp_path / "latency.yaml"
    path.write_text(block)
    spec = load_experiment_file(path).spec()
    assert spec.remediation is not None and spec.remediation.target == "wrapper" and spec.duration_s == 30


def test_readme_openai_client_example_works(
    running_lab: LocalBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    block = next(b for b in _blocks("python") if "from openai import OpenAI" in b)
    cfg = running_lab.config
    code = block.replace("127.0.0.1:8000", f"127.0.0.1:{cfg.wrapper_port}").replace(
        "127.0.0.1:11434", f"127.0.0.1:{cfg.model_port}"
    )
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert printed.startswith(f"[{cfg.model_name!r}]"), printed
    assert re.search(r"\n\d+ tokens\n", printed), printed  # the usage chunk of the stream
