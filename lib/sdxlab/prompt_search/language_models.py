"""Proposers that ask a language model for prompt revisions: a local causal LM through transformers, or an
OpenAI-compatible chat endpoint (llama.cpp, vLLM, Ollama, LM Studio, or a hosted API).

Both return raw lines; the search loop cleans them (`proposers.clean_proposal`) and skips what is unusable,
so a model that rambles, refuses or returns garbage costs a few candidates, never the run.

The endpoint's API key is read from an environment variable whose *name* is the parameter. The key itself is
never a parameter (papermill writes parameters into every executed notebook), never logged (error bodies are
redacted before they are shortened), never sent to another host (a redirect to another origin drops the
`Authorization` header), and never written anywhere (a proposal that echoes it is dropped). An answer must
arrive whole within the timeout and under `MAX_ANSWER_BYTES`.

The local model is loaded from `.safetensors` weights only, unless the person allows pickle (`.bin`) files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
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
MAX_ANSWER_BYTES = 1_000_000  # a chat answer with a few prompts is a few kB; anything near 1 MB is not one
ERROR_BODY_CHARS = 200  # how much of an error body the log shows (after the key is redacted)
KEY_FRAGMENT = 12  # an echoed run of this many characters of the key counts as the key


class LocalLMProposer:
    """A causal language model from transformers: a hub id or a local folder, from GPT-2 to an instruction-tuned
    chat model. With a chat template it is asked for revisions in a chat; without one it continues a list of
    scored prompts (the way base models are used)."""

    name = "local_lm"

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        max_new_tokens: int = 96,
        temperature: float = 0.9,
        top_p: float = 0.95,
        allow_pickle: bool = False,
    ) -> None:
        self.model_name = str(model)
        self.allow_pickle = bool(allow_pickle)  # load .bin (pickle) weights too: only for files you trust
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
        if (
            local.is_dir()
            and not self.allow_pickle
            and not list(local.glob("*.safetensors"))
            and (list(local.glob("*.bin")) or list(local.glob("*.pt")) or list(local.glob("*.pth")))
        ):
            raise ProposerError(
                f"The language model folder {local} holds only pickle weights (.bin), which can run code when "
                "loaded; sdxlab loads only .safetensors. Convert it (save_pretrained writes safetensors), or set "
                "search_lm_allow_pickle=True if you trust where the files came from."
            )
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local.exists())
            self._model = AutoModelForCausalLM.from_pretrained(
                source,
                dtype=placement.dtype,
                local_files_only=local.exists(),
                use_safetensors=None if self.allow_pickle else True,
            )
        except Exception as error:  # hub errors, missing files, unknown architectures
            raise ProposerError(
                f"Could not load the language model '{self.model_name}' ({type(error).__name__}: "
                f"{str(error).splitlines()[0][:160] if str(error) else 'no details'}); pass a hub id you can "
                "download or a local folder with config.json, .safetensors weights and the tokenizer."
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
            encoded = self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
        except Exception:  # some templates refuse a system message: fold it into the user's
            merged = [{"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}]
            encoded = self._tokenizer.apply_chat_template(
                merged, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
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
        output = model.generate(
            **encoded,
            do_sample=True,
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=max_new_tokens,
            num_return_sequences=sequences,
            pad_token_id=pad,
        )
        start = encoded["input_ids"].shape[1]
        return [tokenizer.decode(row[start:], skip_special_tokens=True) for row in output]


class EndpointProposer:
    """An OpenAI-compatible `/chat/completions` endpoint. `base_url` is the API root (e.g.
    `http://127.0.0.1:8080/v1`); the key, if the server wants one, is read from the environment variable
    named by `api_key_env` at request time. Timeouts, 5xx/429 answers and malformed JSON are retried with
    a growing pause; when the endpoint stays unusable the round goes on with the other proposers."""

    name = "endpoint"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        retries: int = 2,
        backoff_s: float = 1.0,
        temperature: float = 0.9,
        max_tokens: int = 800,
    ) -> None:
        if api_key_env and not ENV_NAME.match(api_key_env):
            # Never echo the value: if someone pasted their key here, printing it would leak it into the notebook.
            raise ProposerError(
                "search_endpoint_api_key_env must be the NAME of an environment variable that holds the key "
                "(e.g. OPENAI_API_KEY), not the key itself; set the variable before starting Jupyter."
            )
        if not re.match(r"^https?://", base_url or ""):
            raise ProposerError(
                f"The endpoint URL '{base_url}' must start with http:// or https:// (e.g. http://127.0.0.1:8000/v1)."
            )
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
        body = {
            "model": self.model,
            "messages": revision_messages(context, count),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": context.rng.randrange(2**31),
        }
        answer = self.chat(body)
        lines = proposal_lines(answer) if answer else []
        key = self._key()
        kept = [line for line in lines if not contains_key(line, key)]
        if len(kept) < len(lines):  # a server that echoes the key must not get it into candidates.csv
            log.warning(
                "Endpoint %s: %d proposal(s) contained the API key and were dropped.", self.url, len(lines) - len(kept)
            )
        return kept

    def _key(self) -> str:
        return os.environ.get(self.api_key_env, "") if self.api_key_env else ""

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
        log.warning(
            "Endpoint %s gave no usable answer after %d attempts (%s); this round goes on without it.",
            self.url,
            self.retries + 1,
            problem,
        )
        return None

    def _post(self, body: dict) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self._key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        deadline = time.monotonic() + self.timeout_s  # for the whole answer, not for each read
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as response:
                raw = _read_whole(response, deadline, self.timeout_s)
        except urllib.error.HTTPError as error:
            # redact first, then shorten: cutting first could leave a piece of the key that no longer matches
            detail = _redact(_read_some(error).decode("utf-8", "replace"), key)[:ERROR_BODY_CHARS]
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
            raise _Transient(f"malformed answer: {_redact(raw.decode('utf-8', 'replace'), key)[:120]!r}") from None
        if not isinstance(content, str):
            raise _Transient("malformed answer: the message content is not text")
        return content


class _Transient(Exception):
    """Worth retrying: timeouts, overloaded or crashing servers, truncated answers."""


class _Permanent(Exception):
    """Retrying cannot help: wrong URL, wrong model name, refused key."""


class _Oversized(_Permanent):
    """The answer is far larger than any chat answer: the URL points at something else."""


def _read_whole(response, deadline: float, timeout_s: float) -> bytes:
    """The whole body, or `_Transient` once the deadline passes (a server dripping bytes cannot hold the
    search), or `_Permanent` once it exceeds `MAX_ANSWER_BYTES`."""
    length = response.headers.get("Content-Length")
    if length and length.isdigit() and int(length) > MAX_ANSWER_BYTES:
        raise _Oversized(
            f"the answer would be {int(length):,} bytes, over the {MAX_ANSWER_BYTES:,}-byte limit for a "
            "chat answer; check that search_endpoint_url is an OpenAI-compatible API root"
        )
    chunks, size = [], 0
    late = f"no complete answer within {timeout_s:g} s (search_endpoint_timeout_s)"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Transient(late)
        _set_socket_timeout(response, remaining)
        try:
            chunk = response.read1(65536)
        except TimeoutError:
            raise _Transient(late) from None
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise _Oversized(
                f"the answer exceeded the {MAX_ANSWER_BYTES:,}-byte limit for a chat answer; check that "
                "search_endpoint_url is an OpenAI-compatible API root"
            )
        chunks.append(chunk)


def _set_socket_timeout(response, seconds: float) -> None:
    """Each socket read waits at most until the deadline (best effort: the socket is an implementation detail)."""
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(max(seconds, 0.01))


def _read_some(error: urllib.error.HTTPError, limit: int = 65536) -> bytes:
    try:
        return error.read(limit) or b""
    except (OSError, ValueError):
        return b""


class _SameOriginAuthorization(urllib.request.HTTPRedirectHandler):
    """Follow redirects as urllib does, but never carry the `Authorization` header to another origin."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != _origin(req.full_url):
            new.remove_header("Authorization")
        return new


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port or default


_OPENER = urllib.request.build_opener(_SameOriginAuthorization)


def _redact(text: str, key: str) -> str:
    """The text with the key, and any run of `KEY_FRAGMENT` characters of it, replaced by ***."""
    if not key:
        return text
    text = text.replace(key, "***")
    if len(key) > KEY_FRAGMENT:
        for start in range(len(key) - KEY_FRAGMENT + 1):
            text = text.replace(key[start : start + KEY_FRAGMENT], "***")
    return text


def contains_key(text: str, key: str) -> bool:
    """Whether the text holds the key or a run of `KEY_FRAGMENT` of its characters."""
    return bool(key) and _redact(text, key) != text
