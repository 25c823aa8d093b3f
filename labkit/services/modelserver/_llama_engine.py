"""The `llama` engine: llama-cpp-python running a GGUF model (SmolLM2-135M-Instruct by default).

One `Llama` context per parallel slot; token counts are the tokens llama.cpp actually evaluated and sampled.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from labkit.services.modelserver._engine import (
    ChatMessage,
    DoneReason,
    GenerationOptions,
    GenerationResult,
    TokenStream,
)
from labkit.services.modelserver._gguf_metadata import read_gguf_metadata

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from llama_cpp.llama_types import CreateCompletionStreamResponse

__all__ = ["CHATML_TEMPLATE", "LlamaEngine"]

logger = logging.getLogger(__name__)

# Used only when a GGUF file carries no chat template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)

# Ollama's sampling defaults, so that both engines answer alike when a request sets nothing.
_OLLAMA_DEFAULTS = {"temperature": 0.8, "top_p": 0.9, "top_k": 40, "repeat_penalty": 1.1}


class _TokenCounter:
    """A llama.cpp stopping criterion that counts tokens and cancels between them.

    llama-cpp-python calls it once per sampled token with the evaluated token ids; the first
    call sees exactly the prompt. (It calls it once more after the loop with the same ids,
    which does not change the counts.)
    """

    def __init__(self, cancel: threading.Event) -> None:
        self._cancel = cancel
        self._first: int | None = None
        self._last = 0

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        seen = len(input_ids)
        if self._first is None:
            self._first = seen
        self._last = seen
        return self._cancel.is_set()

    @property
    def prompt_tokens(self) -> int | None:
        return self._first

    @property
    def sampled_tokens(self) -> int:
        return 0 if self._first is None else self._last - self._first + 1


@dataclass(kw_only=True, eq=False, repr=False)
class LlamaEngine:
    """llama-cpp-python behind the `Engine` protocol.

    `parallel` contexts share the memory-mapped weights, so `num_parallel` requests really decode
    at once. Chat prompts are rendered with the model's own GGUF chat template (the formatter
    llama-cpp-python's `create_chat_completion` uses) and run through `create_completion`, because
    the chat handler drops caller stopping criteria, which carry cancellation and token counts.
    """

    model_path: Path
    n_ctx: int = 2048
    n_threads: int = 2
    parallel: int = 1
    seed: int = 0
    _contexts: list[Llama] = field(init=False, default_factory=list)
    _free: queue.SimpleQueue[Llama] = field(init=False, default_factory=queue.SimpleQueue)
    _metadata: dict[str, Any] | None = field(init=False, default=None)
    _eos_text: str = field(init=False, default="")
    _bos_text: str = field(init=False, default="")
    _eos_id: int = field(init=False, default=-1)
    _formatter: Jinja2ChatFormatter | None = field(init=False, default=None)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    @property
    def loaded(self) -> bool:
        return bool(self._contexts)

    def load(self) -> None:
        from llama_cpp import Llama

        with self._lock:
            if self._contexts:
                return
            contexts = [
                Llama(
                    model_path=str(self.model_path),
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    seed=self.seed,
                    verbose=False,
                )
                for _ in range(self.parallel)
            ]
            first = contexts[0]
            self._eos_id = first.token_eos()
            self._eos_text = _token_text(first, self._eos_id)
            self._bos_text = _token_text(first, first.token_bos())
            template = first.metadata.get("tokenizer.chat_template", "")
            self._formatter = _chat_formatter(template, self._eos_text, self._bos_text, self._eos_id)
            for context in contexts:
                self._free.put(context)
            self._contexts = contexts
            logger.info("loaded %s (%d contexts)", self.model_path, len(contexts))

    def unload(self) -> None:
        with self._lock:
            contexts, self._contexts = self._contexts, []
            while not self._free.empty():
                self._free.get_nowait()
            for context in contexts:
                context.close()
            if contexts:
                logger.info("unloaded %s", self.model_path)

    def tokenize_count(self, text: str) -> int:
        context = self._borrow()
        try:
            return len(context.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        finally:
            self._free.put(context)

    def model_info(self) -> Mapping[str, Any] | None:
        """The GGUF metadata of the model file, read once (without loading weights)."""
        with self._lock:
            if self._metadata is None:
                self._metadata = read_gguf_metadata(self.model_path)
            return self._metadata

    def template(self) -> str:
        template = (self.model_info() or {}).get("tokenizer.chat_template")
        return template if isinstance(template, str) else ""

    def generate(self, prompt: str, options: GenerationOptions, cancel: threading.Event) -> TokenStream:
        return self._complete(prompt, list(options.stop), options, cancel)

    def chat(
        self, messages: Sequence[ChatMessage], options: GenerationOptions, cancel: threading.Event
    ) -> TokenStream:
        formatter = self._formatter
        if formatter is None:
            raise RuntimeError("the llama engine is not loaded; load() it before generating")
        rendered = formatter(messages=[message.as_dict() for message in messages])  # type: ignore[misc]
        template_stops = rendered.stop if isinstance(rendered.stop, list) else [rendered.stop or ""]
        stops = [stop for stop in (*template_stops, *options.stop) if stop]
        return self._complete(rendered.prompt, stops, options, cancel)

    def _complete(
        self, prompt: str, stops: list[str], options: GenerationOptions, cancel: threading.Event
    ) -> TokenStream:
        from llama_cpp import StoppingCriteriaList

        context = self._borrow()
        try:
            limit = options.token_limit
            if limit == 0:
                prompt_tokens = len(context.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
                return GenerationResult(prompt_tokens=prompt_tokens, output_tokens=0, done_reason="length")
            counter = _TokenCounter(cancel)
            chunks = cast(
                "Iterator[CreateCompletionStreamResponse]",
                context.create_completion(
                    prompt,
                    max_tokens=limit,
                    temperature=_pick(options.temperature, _OLLAMA_DEFAULTS["temperature"]),
                    top_p=_pick(options.top_p, _OLLAMA_DEFAULTS["top_p"]),
                    top_k=int(_pick(options.top_k, _OLLAMA_DEFAULTS["top_k"])),
                    repeat_penalty=_OLLAMA_DEFAULTS["repeat_penalty"],
                    frequency_penalty=_pick(options.frequency_penalty, 0.0),
                    presence_penalty=_pick(options.presence_penalty, 0.0),
                    seed=options.seed,
                    stop=stops,
                    stream=True,
                    stopping_criteria=StoppingCriteriaList([counter]),
                ),
            )
            finish: str | None = None
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    if cancel.is_set():
                        break
                    if choice["text"]:
                        yield choice["text"]
                    finish = choice["finish_reason"] or finish
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            counted = counter.prompt_tokens
            if counted is None:
                counted = len(context.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
            reason: DoneReason = "length" if finish == "length" else "stop"
            if cancel.is_set():
                reason = "cancelled"
            return GenerationResult(
                prompt_tokens=counted, output_tokens=counter.sampled_tokens, done_reason=reason
            )
        finally:
            self._free.put(context)

    def _borrow(self) -> Llama:
        if not self._contexts:
            raise RuntimeError("the llama engine is not loaded; load() it before generating")
        try:
            return self._free.get_nowait()
        except queue.Empty:
            raise RuntimeError(
                f"more concurrent generations than the {self.parallel} parallel slots this engine has"
            ) from None


def _token_text(llama: Llama, token: int) -> str:
    if token < 0:
        return ""
    return llama.detokenize([token], special=True).decode("utf-8", errors="replace")


def _chat_formatter(template: str, eos_text: str, bos_text: str, eos_id: int) -> Jinja2ChatFormatter:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(
        template=template or CHATML_TEMPLATE,
        eos_token=eos_text,
        bos_token=bos_text,
        stop_token_ids=[eos_id] if eos_id >= 0 else None,
    )


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value
