"""Language-model proposers: a tiny random causal LM built offline (its output is garbage, which must be
handled), and the OpenAI-compatible endpoint against a fake server on loopback, with its errors. The API key
must reach the server and nothing else: not logs, not the CSV, not the proposer's repr."""

from __future__ import annotations

import logging
import random
import socket

import pandas as pd
import pytest
from fake_openai_server import FakeOpenAIServer
from test_prompt_search import SyntheticEvaluator, make_intent

from sdxlab.prompt_search.choose import make_proposers
from sdxlab.prompt_search.language_models import EndpointProposer, LocalLMProposer
from sdxlab.prompt_search.proposers import (
    ProposalContext,
    ProposerError,
    ScoredPrompt,
    clean_proposal,
    clip_token_count,
)
from sdxlab.prompt_search.search import SearchSettings, run_search

SECRET = "sk-test-6f1c0ffee-never-print-me"
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def build_tiny_causal_lm(folder, chat_template: str | None = None):
    """A one-layer GPT-2 with random weights and the real CLIP BPE tokenizer, all built offline."""
    import torch
    from transformers import CLIPTokenizer, GPT2Config, GPT2LMHeadModel

    from sdxlab.models import write_clip_tokenizer

    write_clip_tokenizer(folder, pad_token="<|endoftext|>")
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    tokenizer.model_max_length = 512
    if chat_template:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=512,
        n_embd=32,
        n_layer=1,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_lms(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-lm")
    return {"plain": build_tiny_causal_lm(root / "plain"), "chat": build_tiny_causal_lm(root / "chat", CHAT_TEMPLATE)}


def a_context(seed: int = 0) -> ProposalContext:
    intent = make_intent()
    history = [
        ScoredPrompt(intent.start_prompt, {"alignment": 0.21, "likeness": 0.8, "total": 0.505}),
        ScoredPrompt(f"{intent.start_prompt}, golden hour lighting", {"alignment": 0.3, "likeness": 0.7, "total": 0.5}),
    ]
    return ProposalContext(
        intent=intent, history=history, round_index=1, rng=random.Random(seed), score_names=["alignment", "likeness"]
    )


@pytest.mark.parametrize("kind", ["plain", "chat"])
def test_local_lm_is_asked_with_intent_and_scores_and_its_garbage_is_survived(tiny_lms, kind, tmp_path):
    proposer = LocalLMProposer(str(tiny_lms[kind]), device="cpu", max_new_tokens=8)  # 49k-word vocabulary: slow steps
    proposer.load()
    assert proposer.uses_chat == (kind == "chat")
    asked = []
    generate = proposer._model.generate
    proposer._model.generate = lambda **kw: (
        asked.append(proposer._tokenizer.decode(kw["input_ids"][0])) or generate(**kw)
    )
    lines = proposer.propose(a_context(), 3)
    assert isinstance(lines, list) and all(isinstance(line, str) for line in lines)
    question = asked[0].replace(" ", "")  # the CLIP tokenizer decodes "0.505" as "0 . 5 0 5"
    assert "astronautonmars" in question and "0.505" in question and "likeness0.8" in question
    assert proposer.propose(a_context(), 3) == lines, "seeded by the search's random source"

    # the whole loop: garbage becomes usable prompts or is skipped; the offline proposer fills the rest
    intent = make_intent()
    settings = SearchSettings(rounds=2, candidates_per_round=3, seeds=[0])
    result = run_search(SyntheticEvaluator(intent), [intent], [proposer], settings, tmp_path, progress=False)
    frame = pd.read_csv(tmp_path / "candidates.csv")
    assert frame.groupby("round").size().tolist() == [1, 3, 3]
    assert set(frame["proposer"]) <= {"start", "local_lm", "vocabulary"}
    assert frame["prompt"].str.contains("sks person").all()
    assert all(clip_token_count(prompt) <= 75 for prompt in frame["prompt"])
    assert result.intents[0].stop_reason == "all rounds done"


def test_local_lm_that_cannot_be_loaded_says_what_to_pass(tmp_path):
    with pytest.raises(ProposerError, match="local folder"):
        LocalLMProposer(str(tmp_path / "no-such-model")).load()
    intent = make_intent()
    evaluator = SyntheticEvaluator(intent)
    with pytest.raises(ProposerError):
        run_search(
            evaluator,
            [intent],
            [LocalLMProposer(str(tmp_path / "no-such-model"))],
            SearchSettings(),
            tmp_path,
            progress=False,
        )
    assert evaluator.calls == 0 and not (tmp_path / "candidates.csv").exists(), "it fails before any picture"
    with pytest.raises(ProposerError, match="search_lm_model"):
        make_proposers(["local_lm"])
    with pytest.raises(ProposerError, match="valid proposers"):
        make_proposers(["oracle"])


def test_endpoint_proposer_speaks_the_openai_protocol(monkeypatch):
    monkeypatch.setenv("SDXLAB_TEST_KEY", SECRET)
    with FakeOpenAIServer() as server:
        proposer = EndpointProposer(server.base_url, "local-model", api_key_env="SDXLAB_TEST_KEY", backoff_s=0.01)
        lines = proposer.propose(a_context(), 3)
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert request["body"]["model"] == "local-model"
    conversation = " ".join(message["content"] for message in request["body"]["messages"])
    assert (
        "person as an astronaut on Mars" in conversation and "0.505" in conversation and '"sks person"' in conversation
    )
    intent = make_intent()
    cleaned = [clean_proposal(line, intent) for line in lines]
    assert cleaned[1:] == [
        "sks person as an astronaut on Mars, cinematic, golden hour lighting, 35mm lens",
        "sks person in a white spacesuit on the red dunes of Mars, dramatic rim light",
        "photo of sks person, an astronaut on Mars, epic, highly detailed",
        None,
    ], "heading and garbage skipped, numbering stripped, subject put back"


@pytest.mark.parametrize(
    ("script", "retries", "requests", "answered"),
    [
        (["500", "malformed", "ok"], 2, 3, True),  # transient errors are retried
        (["500", "500", "500"], 2, 3, False),  # until the retries are spent
        (["timeout"], 0, 1, False),
        (["empty", "ok"], 1, 2, True),  # an answer without choices is malformed too
        (["401"], 3, 1, False),  # a refused key is not retried
    ],
)
def test_endpoint_errors_are_retried_or_skipped_never_fatal(monkeypatch, caplog, script, retries, requests, answered):
    monkeypatch.setenv("SDXLAB_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(script=script, delay_s=1.0) as server:
        proposer = EndpointProposer(
            server.base_url, "m", api_key_env="SDXLAB_TEST_KEY", timeout_s=0.3, retries=retries, backoff_s=0.01
        )
        lines = proposer.propose(a_context(), 2)
    assert len(server.requests) == requests
    assert bool(lines) == answered
    if not answered:
        assert "Endpoint" in caplog.text
    assert SECRET not in caplog.text


def test_unreachable_endpoint_costs_a_round_not_the_run(caplog):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proposer = EndpointProposer(
        f"http://127.0.0.1:{port}/v1", "m", api_key_env=None, timeout_s=0.5, retries=1, backoff_s=0.01
    )
    assert proposer.propose(a_context(), 2) == []
    assert "no usable answer after 2 attempts" in caplog.text


def test_api_key_never_leaks_into_logs_csv_or_repr(monkeypatch, caplog, tmp_path, capsys):
    monkeypatch.setenv("SDXLAB_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    intent = make_intent()
    with FakeOpenAIServer(script=["500", "ok", "401", "malformed", "malformed", "malformed"]) as server:
        proposer = make_proposers(
            ["endpoint"],
            endpoint_url=server.base_url,
            endpoint_model="m",
            endpoint_api_key_env="SDXLAB_TEST_KEY",
            endpoint_retries=2,
        )[0]
        proposer.backoff_s = 0.01
        run_search(
            SyntheticEvaluator(intent),
            [intent],
            [proposer],
            SearchSettings(rounds=3, candidates_per_round=3, seeds=[0]),
            tmp_path,
            progress=False,
        )
    assert all(request["headers"]["Authorization"] == f"Bearer {SECRET}" for request in server.requests)
    frame = pd.read_csv(tmp_path / "candidates.csv")
    assert "endpoint" in set(frame["proposer"]), "the endpoint's prompts were used"
    written = "".join(path.read_text(errors="replace") for path in tmp_path.rglob("*") if path.is_file())
    captured = capsys.readouterr()
    for text in (written, caplog.text, captured.out, captured.err, repr(proposer), str(vars(proposer))):
        assert SECRET not in text


def test_a_key_pasted_where_its_variable_name_belongs_is_refused_without_echo():
    with pytest.raises(ProposerError, match="NAME of an environment variable") as refused:
        EndpointProposer("http://127.0.0.1:1/v1", "m", api_key_env=SECRET)
    assert SECRET not in str(refused.value)
    with pytest.raises(ProposerError, match="http://"):
        EndpointProposer("127.0.0.1:8000/v1", "m")


# --- secrets and hostile endpoints (issue 11) ---------------------------------------------------------------


def key_fragments(key: str, size: int = 8) -> list[str]:
    return [key[start : start + size] for start in range(len(key) - size + 1)]


def test_an_error_body_echoing_the_key_leaks_no_part_of_it(monkeypatch, caplog):
    """The key starts near character 200 of the body: shortening before redacting would log its first half."""
    monkeypatch.setenv("SDXLAB_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(script=["401-long"]) as server:
        proposer = EndpointProposer(server.base_url, "m", api_key_env="SDXLAB_TEST_KEY", retries=0)
        assert proposer.propose(a_context(), 2) == []
    assert "HTTP 401" in caplog.text and "bad key" in caplog.text
    assert not [fragment for fragment in key_fragments(SECRET) if fragment in caplog.text]


def test_a_redirect_to_another_origin_does_not_carry_the_key(monkeypatch):
    monkeypatch.setenv("SDXLAB_TEST_KEY", SECRET)
    with FakeOpenAIServer() as elsewhere:
        with FakeOpenAIServer(script=["redirect"], redirect_to=elsewhere.base_url + "/chat/completions") as server:
            proposer = EndpointProposer(server.base_url, "m", api_key_env="SDXLAB_TEST_KEY", retries=0)
            proposer.propose(a_context(), 2)
        assert server.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
        assert elsewhere.requests, "the redirect was followed"
        assert "Authorization" not in elsewhere.requests[0]["headers"]
        assert SECRET not in str(elsewhere.requests)
    with FakeOpenAIServer(script=["redirect"]) as same:  # the same origin may keep it
        same.redirect_to = same.base_url + "/chat/completions"
        EndpointProposer(same.base_url, "m", api_key_env="SDXLAB_TEST_KEY", retries=0).propose(a_context(), 2)
    assert same.requests[1]["headers"]["Authorization"] == f"Bearer {SECRET}"


def test_a_dripping_server_cannot_hold_the_search_past_the_timeout(caplog):
    """One byte every 0.4 s: each read is quick, but the whole answer would take minutes."""
    import time

    with FakeOpenAIServer(script=["drip"], drip_s=0.4) as server:
        proposer = EndpointProposer(server.base_url, "m", api_key_env=None, timeout_s=1.0, retries=0)
        started = time.monotonic()
        assert proposer.propose(a_context(), 2) == []
        waited = time.monotonic() - started
    assert waited < 3.0, f"blocked {waited:.1f} s with a 1 s timeout"
    assert "no complete answer within 1 s" in caplog.text


@pytest.mark.parametrize("behaviour", ["huge", "huge-stream"])
def test_an_answer_over_the_size_cap_is_refused_with_a_clear_error(caplog, behaviour):
    with FakeOpenAIServer(script=[behaviour]) as server:
        proposer = EndpointProposer(server.base_url, "m", api_key_env=None, retries=2, backoff_s=0.01)
        assert proposer.propose(a_context(), 2) == []
    assert len(server.requests) == 1, "not retried: the URL points at something that is not a chat API"
    assert "1,000,000-byte limit" in caplog.text and "search_endpoint_url" in caplog.text


def test_a_key_echoed_in_proposals_never_lands_in_the_output_files(monkeypatch, tmp_path):
    from sdxlab.prompt_search import report
    from sdxlab.prompt_search.heldout import heldout_for_search

    monkeypatch.setenv("SDXLAB_TEST_KEY", SECRET)
    intent = make_intent()
    evaluator = SyntheticEvaluator(intent)
    with FakeOpenAIServer(script=["echo"] * 4) as server:
        proposer = EndpointProposer(server.base_url, "m", api_key_env="SDXLAB_TEST_KEY", retries=0)
        result = run_search(
            evaluator,
            [intent],
            [proposer],
            SearchSettings(rounds=3, candidates_per_round=3, seeds=[0]),
            tmp_path,
            progress=False,
        )
    assert "endpoint" in set(pd.read_csv(tmp_path / "candidates.csv")["proposer"]), "the other lines were used"
    checks = heldout_for_search(evaluator, result, [100_000, 100_001], finalists=3)
    report.write_outputs(tmp_path, report.best_prompts_summary(result, checks), checks)
    for name in ("candidates.csv", "best_prompts.json", "heldout.csv"):
        text = (tmp_path / name).read_text()
        assert not [fragment for fragment in key_fragments(SECRET, 12) if fragment in text], name


def test_local_lm_refuses_pickle_weights_unless_allowed(tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = build_tiny_causal_lm(tmp_path / "pickled")
    weights = folder / "model.safetensors"
    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ProposerError, match="pickle") as refused:
        LocalLMProposer(str(folder), device="cpu").load()
    assert "search_lm_allow_pickle" in str(refused.value)
    allowed = LocalLMProposer(str(folder), device="cpu", allow_pickle=True)
    allowed.load()
    assert allowed._model is not None


def test_endpoint_gets_opt2i_feedback_best_and_worst_with_sub_scores_and_the_weakest_part(monkeypatch):
    intent = make_intent()
    history = [
        ScoredPrompt(intent.start_prompt, {"clip_t": 0.21, "likeness": 0.80, "total": 0.25}),
        ScoredPrompt(f"{intent.start_prompt}, oil painting, serene", {"clip_t": 0.31, "likeness": 0.20, "total": 0.32}),
        ScoredPrompt(f"{intent.start_prompt}, neon glow", {"clip_t": 0.19, "likeness": 0.60, "total": 0.22}),
        ScoredPrompt(
            f"{intent.start_prompt}, golden hour lighting", {"clip_t": 0.26, "likeness": 0.70, "total": 0.295}
        ),
    ]
    context = ProposalContext(
        intent=intent,
        history=history,
        round_index=2,
        rng=random.Random(0),
        top_k=2,
        score_names=["clip_t", "likeness"],
        weights={"clip_t": 1.0, "likeness": 0.05},
    )
    with FakeOpenAIServer() as server:
        EndpointProposer(server.base_url, "m", api_key_env=None).propose(context, 3)
    user = server.requests[0]["body"]["messages"][1]["content"]
    assert "What the person asks for: person as an astronaut on Mars" in user
    best, worst = user.split("Best prompts so far:")[1].split("Worst prompts so far")
    assert (
        "[total 0.320, clip_t 0.310, likeness 0.200] sks person as an astronaut on Mars, oil painting, serene" in best
    )
    assert "golden hour lighting" in best and "neon glow" not in best
    assert "[total 0.220, clip_t 0.190, likeness 0.600] sks person as an astronaut on Mars, neon glow" in worst
    assert "total = 1 x clip_t + 0.05 x likeness" in user and "likeness: 0 = looks like a stranger" in user
    # the best prompt lags in likeness (0.2 vs 0.8 reached: 0.05 x 0.6 = 0.03 of total, more than clip_t's 0)
    assert (
        "The weakest part of the best prompt is likeness (0.200, while another prompt reached 0.800). Fix it:" in user
    )
