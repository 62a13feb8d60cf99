"""Proposers that ask a language model for prompt revisions: a local causal LM through transformers, or an
OpenAI-compatible chat endpoint (llama.cpp, vLLM, Ollama, LM Studio, or a hosted API).

Both return raw lines; the search loop cleans them (`proposers.clean_proposal`) and skips what is unusable,
so a model that rambles, refuses or returns garbage costs a few candidates, never the run.

The endpoint's API key is read from an environment variable whose *name* is the parameter. The key itself is
never a parameter (papermill writes parameters into every executed notebook), never logged and never
written anywhere.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from sdxlab.prompt_search.proposers import (
    ProposalContext,
    ProposerError,
    completion_prompt,
    proposal_lines,
    revision_messages,
)

log = logging.getLogger("sdxlab.prompt_search")

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


class LocalLMProposer:
    """A causal language model from transformers: a hub id or a local folder, from GPT-2 to an instruction-tuned
    chat model. With a chat template it is asked for revisions in a chat; without one it continues a list of
    scored prompts (the way base models are used)."""

    name = "local_lm"

    def __init__(self, model: str, *, device: str = "auto", max_new_tokens: int = 96, temperature: float = 0.9,
                 top_p: float = 0.95) -> None:
        self.model_name = str(model)
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self._model = None
        self._tokenizer = None

    def load(self) -> None:
        """Load the model once (the first proposal does it; call early to fail before any image is generated)."""
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from sdxlab.models import choose_placement

        placement = choose_placement(self.device)
        local = Path(self.model_name).expanduser()
        source = str(local) if local.exists() else self.model_name
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local.exists())
            self._model = AutoModelForCausalLM.from_pretrained(source, dtype=placement.dtype, local_files_only=local.exists())
        except Exception as error:  # hub errors, missing files, unknown architectures
            raise ProposerError(
                f"Could not load the language model '{self.model_name}' ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:160] if str(error) else 'no details'}); pass a hub id you can "
                "download or a local folder with config.json, the weights and the tokenizer."
            ) from error
        self._model.to(placement.device).eval()

    @property
    def uses_chat(self) -> bool:
        return bool(getattr(self._tokenizer, "chat_template", None))

    def propose(self, context: ProposalContext, count: int) -> list[str]:
        import torch

        self.load()
        seed = context.rng.randrange(2**31)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed)
            if self.uses_chat:
                return self._chat(context, count)
            return self._complete(context, count)

    def _chat(self, context: ProposalContext, count: int) -> list[str]:
        messages = revision_messages(context, count)
        try:
            encoded = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                          return_dict=True)
        except Exception:  # some templates refuse a system message: fold it into the user's
            merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
            encoded = self._tokenizer.apply_chat_template(merged, add_generation_prompt=True, return_tensors="pt",
                                                          return_dict=True)
        texts = self._generate(dict(encoded), min(1024, self.max_new_tokens * count), sequences=1)
        return [line for text in texts for line in proposal_lines(text)]

    def _complete(self, context: ProposalContext, count: int) -> list[str]:
        encoded = self._tokenizer(completion_prompt(context), return_tensors="pt")
        texts = self._generate(dict(encoded), self.max_new_tokens, sequences=count)
        # a base model keeps writing more scored lines: only the first line of each continuation is its prompt
        return [lines[0] for lines in (proposal_lines(text) for text in texts) if lines]

    def _generate(self, encoded: dict, max_new_tokens: int, sequences: int) -> list[str]:
        model, tokenizer = self._model, self._tokenizer
        window = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
        input_ids = encoded["input_ids"]
        if window and input_ids.shape[1] + max_new_tokens > window:
            keep = max(window - max_new_tokens, 1)
            encoded = {key: value[:, -keep:] for key, value in encoded.items()}  # the end holds the question
        encoded = {key: value.to(model.device) for key, value in encoded.items()}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        output = model.generate(**encoded, do_sample=True, temperature=self.temperature, top_p=self.top_p,
                                max_new_tokens=max_new_tokens, num_return_sequences=sequences, pad_token_id=pad)
        start = encoded["input_ids"].shape[1]
        return [tokenizer.decode(row[start:], skip_special_tokens=True) for row in output]


class EndpointProposer:
    """An OpenAI-compatible `/chat/completions` endpoint. `base_url` is the API root (e.g.
    `http://127.0.0.1:8080/v1`); the key, if the server wants one, is read from the environment variable
    named by `api_key_env` at request time. Timeouts, 5xx/429 answers and malformed JSON are retried with
    a growing pause; when the endpoint stays unusable the round goes on with the other proposers."""

    name = "endpoint"

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = "OPENAI_API_KEY",
                 timeout_s: float = 60.0, retries: int = 2, backoff_s: float = 1.0, temperature: float = 0.9,
                 max_tokens: int = 800) -> None:
        if api_key_env and not ENV_NAME.match(api_key_env):
            # Never echo the value: if someone pasted their key here, printing it would leak it into the notebook.
            raise ProposerError(
                "search_endpoint_api_key_env must be the NAME of an environment variable that holds the key "
                "(e.g. OPENAI_API_KEY), not the key itself; set the variable before starting Jupyter."
            )
        if not re.match(r"^https?://", base_url or ""):
            raise ProposerError(f"The endpoint URL '{base_url}' must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1).")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key_env = api_key_env or None
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.temperature = temperature
        self.max_tokens = max_tokens

    def __repr__(self) -> str:  # shown in notebooks: the variable's name, never its value
        return f"EndpointProposer(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def propose(self, context: ProposalContext, count: int) -> list[str]:
        body = {"model": self.model, "messages": revision_messages(context, count), "temperature": self.temperature,
                "max_tokens": self.max_tokens, "seed": context.rng.randrange(2**31)}
        answer = self.chat(body)
        return proposal_lines(answer) if answer else []

    def chat(self, body: dict) -> str | None:
        """The assistant's text, or None once every retry failed (the reason is logged, without the key)."""
        problem = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return self._post(body)
            except _Permanent as error:
                log.warning("Endpoint %s refused the request: %s", self.url, error)
                return None
            except _Transient as error:
                problem = str(error)
        log.warning("Endpoint %s gave no usable answer after %d attempts (%s); this round goes on without it.",
                    self.url, self.retries + 1, problem)
        return None

    def _post(self, body: dict) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as error:
            detail = _redact(error.read()[:200].decode("utf-8", "replace"), key)
            if error.code in (408, 409, 429) or error.code >= 500:
                raise _Transient(f"HTTP {error.code}: {detail}") from None
            hint = f" (check the key in ${self.api_key_env})" if error.code in (401, 403) and self.api_key_env else ""
            raise _Permanent(f"HTTP {error.code}{hint}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise _Transient(f"{type(reason).__name__}: {_redact(str(reason), key)}") from None
        try:
            content = json.loads(raw)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Transient(f"malformed answer: {_redact(raw[:120].decode('utf-8', 'replace'), key)!r}") from None
        if not isinstance(content, str):
            raise _Transient("malformed answer: the message content is not text")
        return content


class _Transient(Exception):
    """Worth retrying: timeouts, overloaded or crashing servers, truncated answers."""


class _Permanent(Exception):
    """Retrying cannot help: wrong URL, wrong model name, refused key."""


def _redact(text: str, key: str) -> str:
    return text.replace(key, "***") if key else text
