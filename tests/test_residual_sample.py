"""Residual sampling (Algorithm 1) as `lmlab sample` runs it (issue #18.3): prompts in batches of --batch-size
with bounded work per call, input order kept, <eos> before the prompt, a default length that fits the energy's
window, and --temperature/--top-p as a proposal whose importance weights use its exact log-probabilities."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from typer.testing import CliRunner

import lmlab.core.residual.joint as joint_mod
import lmlab.core.residual.sample as sample_mod
from lmlab.cli.main import app
from lmlab.core.checkpoint import save_checkpoint
from lmlab.core.config import to_dict
from lmlab.core.data import DataDir
from lmlab.core.generate import filter_logits, load_lm, sequence_logprob
from lmlab.core.residual.energy import build_energy
from lmlab.core.residual.joint import ResidualModel, base_lm_record, load_residual
from lmlab.core.residual.sample import joint_sample, propose, sample_lines
from test_residual_estimators import TableEnergy
from test_residual_train import make_cfg, setup  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread_module")


class BigramLM(nn.Module):
    """An LM with a fixed next-token table: log P(x_t | x_{t-1}) = log probs[x_{t-1}, x_t] (exact, cache-free)."""

    context = None

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.register_buffer("table", probs.log())

    def hidden(self, tokens, state=None):  # no state: the next token's logits read the current token only
        return tokens, state

    def select_state(self, state, index):
        return state

    def forward(self, tokens, targets=None, state=None):
        logits = self.table[tokens]  # (B, T, V)
        if targets is None:
            return logits, state
        return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none"), state


class CopyLastLM(BigramLM):
    """Continuations repeat the prompt's last token: output text reveals which prompt it belongs to."""

    def __init__(self, vocab: int):
        super().__init__(torch.eye(vocab) * (1 - 1e-6 * vocab) + 1e-6)


@pytest.fixture(scope="module")
def state(setup):
    """A residual-ebm checkpoint dict (8+6 window, random small BiT) on the tiny Transformer base LM."""
    root, ckpt = setup
    cfg = make_cfg(root, ckpt, "unused")
    lm, _, info = load_lm(str(ckpt))
    torch.manual_seed(0)
    energy = build_energy(cfg.energy, info["vocab_size"], 14, lm)
    return {"kind": "residual-ebm", "config": to_dict(cfg), "energy": energy.state_dict(), "step": 0,
            "base_lm": base_lm_record(str(ckpt)), "vocab_size": info["vocab_size"],
            "tokenizer_sha256": info["tokenizer_sha256"]}


PROMPTS = ["the cat", "a dog ran to the", "red", "the big red house", "", "on a mat", "dog",
           "cat sat on", "big", "the cat sat on a mat and", "ran", "house red"]


@pytest.fixture()
def spy(monkeypatch):
    """Record the rows of every LM proposal call and energy call that sampling makes."""
    calls = {"propose": [], "prefixes": [], "score": []}
    real_propose, real_score = sample_mod.propose, sample_mod.score

    def propose_spy(lm, prefixes, *, num_samples, **kw):
        calls["propose"].append(prefixes.size(0) * num_samples)
        calls["prefixes"].append(prefixes.tolist())
        return real_propose(lm, prefixes, num_samples=num_samples, **kw)

    def score_spy(energy, prefixes, continuations, *a, **kw):
        calls["score"].append(continuations.shape[0] * continuations.shape[1])
        return real_score(energy, prefixes, continuations, *a, **kw)

    monkeypatch.setattr(sample_mod, "propose", propose_spy)
    monkeypatch.setattr(sample_mod, "score", score_spy)
    return calls


def test_batches_keep_input_order_and_bound_the_work_per_call(setup, state, spy, monkeypatch):
    root, _ = setup
    data = DataDir(root / "data")
    real_load = joint_mod.load_lm
    monkeypatch.setattr(joint_mod, "load_lm", lambda p, d="cpu": (CopyLastLM(data.vocab_size),) + real_load(p, d)[1:])
    eos = data.eos_id
    rows_per_call, calls_per_run = [], []
    for prompts in (PROMPTS, PROMPTS * 6):  # 12 then 72 prompts
        spy["propose"].clear(), spy["score"].clear()
        out = sample_lines(state, prompts, num_samples=2, candidates=3, top_k=0, seed=0, device="cpu",
                           batch_size=4, with_scores=True)
        # input order: prompt i's samples repeat prompt i's last word (<eos> for the empty prompt: cut to "")
        for p, samples in zip(prompts, out):
            last = p.split()[-1] if p else None
            assert [s["prompt"] for s in samples] == [p, p]
            assert all(s["text"] == (" ".join([last] * 6) if last else "") for s in samples), (p, samples)
        lengths = [len(data.tokenizer.encode(p).ids) + 1 for p in prompts]
        groups = {n: lengths.count(n) for n in set(lengths)}
        assert len(spy["propose"]) == sum(-(-g // 4) for g in groups.values())  # ceil(group / batch) calls
        assert max(spy["propose"]) <= 4 * 2 * 3 and max(spy["score"]) <= 4 * 2 * 3
        rows_per_call.append(max(spy["propose"]))
        calls_per_run.append(len(spy["propose"]))
    assert rows_per_call[0] == rows_per_call[1] and calls_per_run[1] > calls_per_run[0]  # more calls, not bigger ones
    assert all(p[0] == eos for call in spy["prefixes"] for p in call if len(p) < 14 - 6)  # <eos> before the prompt


def test_prompt_encoding_matches_the_lm_sampler(setup, state, spy):
    root, _ = setup
    data = DataDir(root / "data")
    long = "the cat sat on a mat and dog ran to big red"  # 12 words: more than the 8 tokens of room
    sample_lines(state, ["the cat", long, ""], num_samples=1, candidates=2, top_k=0, seed=0, device="cpu")
    seen = sorted(itertools.chain.from_iterable(spy["prefixes"]), key=len)
    ids = lambda s: data.tokenizer.encode(s, add_special_tokens=False).ids  # noqa: E731
    assert seen[0] == [data.eos_id]  # an empty prompt samples unconditionally after <eos>
    assert seen[1] == [data.eos_id] + ids("the cat")  # as lmlab.core.sampling.sample_text encodes it
    assert seen[2] == ids(long)[-8:]  # window 8+6 with 6 new tokens: the prompt's last 8 tokens


def test_seeded_batched_run_equals_the_unbatched_calls(state):
    """One batch of all prompts is one joint_sample call; batches of one are per-prompt calls on one generator."""
    prompts = ["the cat", "a dog", "red house", "on a", "big cat"]  # one token length: one group
    kw = dict(num_samples=2, candidates=4, top_k=3, seed=11, device="cpu", with_scores=True)
    model, tok, info = load_residual(state)
    eos = info["specials"]["eos"]
    prefixes = torch.tensor([[eos] + tok.encode(p, add_special_tokens=False).ids for p in prompts])

    def text(ids):
        ids = ids.tolist()
        return tok.decode(ids[: ids.index(eos)] if eos in ids else ids)

    one_call = joint_sample(model, prefixes, candidates=4, top_k=3, max_new_tokens=6, num_samples=2,
                            generator=torch.Generator().manual_seed(11))
    gen = torch.Generator().manual_seed(11)
    per_prompt = [joint_sample(model, prefixes[b:b + 1], candidates=4, top_k=3, max_new_tokens=6, num_samples=2,
                               generator=gen) for b in range(len(prompts))]
    whole = sample_lines(state, prompts, batch_size=len(prompts), **kw)
    single = sample_lines(state, prompts, batch_size=1, **kw)
    for b in range(len(prompts)):
        for s in range(2):
            assert whole[b][s]["text"] == text(one_call["tokens"][b, s])
            assert whole[b][s]["candidate"] == int(one_call["index"][b, s])
            assert whole[b][s]["energy"] == pytest.approx(float(one_call["energy"][b, s]), abs=1e-6)
            assert single[b][s]["text"] == text(per_prompt[b]["tokens"][0, s])
            assert single[b][s]["candidate"] == int(per_prompt[b]["index"][0, s])
    assert sample_lines(state, prompts, batch_size=2, **kw) == sample_lines(state, prompts, batch_size=2, **kw)


# --- the tempered proposal --------------------------------------------------------------------------
PROBS = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.2, 0.5]])
TABLE = torch.tensor([[0.0, 1.5, -1.0], [1.0, 0.0, 0.5], [-1.0, 1.0, 0.0]])


def test_proposal_log_ratio_is_log_p_topk_minus_log_q():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(5, 5) * 2, -1)
    lm = BigramLM(probs)
    prefixes = torch.tensor([[0, 3], [2, 1]])
    T, k, p = 0.7, 3, 0.8
    tokens, log_ratio = propose(lm, prefixes, num_samples=50, max_new_tokens=4, temperature=T, top_k=k, top_p=p,
                                generator=torch.Generator().manual_seed(1))
    full = torch.cat([prefixes.repeat_interleave(50, 0), tokens], 1)
    logits = lm(full[:, :-1])[0][:, 1:]  # (N, 4, V): the distributions the 4 new tokens were drawn from
    flat = logits.reshape(-1, 5)
    tgt = tokens.reshape(-1, 1)
    log_p = filter_logits(flat, 1.0, k, 1.0).log_softmax(-1).gather(1, tgt).view(-1, 4).sum(1)
    log_q = filter_logits(flat, T, k, p).log_softmax(-1).gather(1, tgt).view(-1, 4).sum(1)
    assert torch.isfinite(log_q).all() and torch.isfinite(log_p).all()
    assert torch.allclose(log_ratio, (log_p - log_q).double(), atol=1e-5)
    # the untempered proposal is the top-k sampler itself: no correction
    _, zero = propose(lm, prefixes, num_samples=5, max_new_tokens=4, top_k=k, generator=torch.Generator().manual_seed(1))
    assert torch.equal(zero, torch.zeros_like(zero))


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_tempered_algorithm1_still_samples_the_joint_model(temperature):
    lm = BigramLM(PROBS)
    model = ResidualModel(lm, TableEnergy(TABLE), 2, 2)
    prefix = torch.tensor([[1, 0]])
    allc = torch.tensor(list(itertools.product(range(3), repeat=2)))
    energy = TABLE[allc[:, 0], allc[:, 1]]
    joint = (sequence_logprob(lm, prefix.expand(9, -1), allc) - energy).softmax(0)
    tempered = PROBS.pow(1 / temperature) / PROBS.pow(1 / temperature).sum(-1, keepdim=True)
    naive = (sequence_logprob(BigramLM(tempered), prefix.expand(9, -1), allc) - energy).softmax(0)
    assert (joint - naive).abs().max() > 0.15  # weights exp(-E) alone would sample a visibly different model
    res = joint_sample(model, prefix, candidates=128, top_k=0, max_new_tokens=2, num_samples=4000,
                       temperature=temperature, generator=torch.Generator().manual_seed(7))
    tok = res["tokens"][0]
    freq = torch.bincount(tok[:, 0] * 3 + tok[:, 1], minlength=9).float() / tok.size(0)
    assert torch.allclose(freq, joint.float(), atol=0.025)
    assert (res["effective_candidates"] <= 128).all() and (res["effective_candidates"] >= 1).all()


# --- the command ------------------------------------------------------------------------------------
runner = CliRunner()


def test_cli_defaults_fit_a_small_window_and_flags_reach_the_sampler(state, tmp_path):
    ckpt = tmp_path / "res.pt"
    save_checkpoint(ckpt, dict(state), "residual-ebm")
    prompts = "the cat\na dog ran\n\nred house\n"
    res = runner.invoke(app, ["sample", "-c", str(ckpt), "--device", "cpu", "--candidates", "4", "--top-k", "3"],
                        input=prompts)
    assert res.exit_code == 0, res.output
    assert len(res.stdout.splitlines()) == 4  # one line per prompt (the default --max-new-tokens fits the 8+6 window)
    res = runner.invoke(app, ["sample", "-c", str(ckpt), "--device", "cpu", "--json", "-n", "2", "--batch-size", "2",
                              "--temperature", "0.8", "--top-p", "0.9", "--max-new-tokens", "5"], input=prompts)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["the cat"] * 2 + ["a dog ran"] * 2 + [""] * 2 + ["red house"] * 2
    assert all(1.0 <= r["effective_candidates"] <= 32 for r in rows)
    res = runner.invoke(app, ["sample", "-c", str(ckpt), "--device", "cpu", "--max-new-tokens", "50"], input=prompts)
    assert res.exit_code != 0 and "use 1..13" in res.stderr and len(res.stderr.strip().splitlines()) == 1
