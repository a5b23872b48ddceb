"""lmlab sample: text from an LM (top-k/top-p/temperature), a residual EBM (Algorithm 1 of Deng et al.),
a translation model (beam search), or images/points from a GEBM (ULA/KLA Langevin).

The checkpoint's kind decides which; prompts/sources come from stdin or --input, one per line, and
outputs keep the input order."""

from __future__ import annotations

import json
import sys
from typing import Optional

import torch
import typer

from lmlab.cli.common import check_flag, handle_errors, refuse
from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.errors import LmlabError
from lmlab.core.gebm.config import SamplerConfig

LM = "Language model"
RES = "Residual EBM (Deng et al. 2020, Algorithm 1)"
MT = "Translation"
GEBM = "GEBM Langevin (Arbel et al. 2021)"
_S = SamplerConfig()  # the one set of GEBM sampler defaults (core/gebm/config.py)


def _read_prompts(input_: Optional[str]) -> list[str] | None:
    from lmlab.core.textio import TextSource
    if input_ is None and sys.stdin.isatty():
        return None
    if input_ is None:
        input_ = "-"
    lines = list(TextSource(input_).lines())
    return lines or None  # an empty stdin (e.g. </dev/null in a batch job) means unconditional sampling


@handle_errors
def sample(
    ctx: typer.Context,
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Checkpoint (.pt): lm, residual-ebm, seq2seq or gebm."),
    input_: Optional[str] = typer.Option(None, "--input", "-i", help="Prompts/sources, one per line ('-' or default: stdin when piped). No input: unconditional."),
    num_samples: int = typer.Option(1, "--num-samples", "-n", help="Samples per prompt (GEBM: total samples; default the preset's num_samples, else 64)."),
    max_new_tokens: int = typer.Option(50, "--max-new-tokens", help="Tokens to generate per sample (stops early at <eos>); residual EBM: default the energy's continuation length."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", rich_help_panel=LM, help="Softmax temperature."),
    top_k: int = typer.Option(0, "--top-k", rich_help_panel=LM, help="Sample among the k most likely tokens (0: all)."),
    top_p: float = typer.Option(1.0, "--top-p", rich_help_panel=LM, help="Nucleus sampling mass (1.0: off)."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same samples."),
    json_out: bool = typer.Option(False, "--json", help="One JSON object per line with prompt, sample and scores."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    batch_size: int = typer.Option(32, "--batch-size", help="Prompts/sentences decoded together."),
    candidates: int = typer.Option(32, "--candidates", rich_help_panel=RES, help="n: LM continuations drawn per prefix and resampled by their importance weights (softmax(-E) at --temperature 1, --top-p 1); --top-k is the paper's top-k, --temperature/--top-p shape only the proposal."),
    beam: int = typer.Option(0, "--beam", rich_help_panel=MT, help="Beam size (translation; 1 = greedy, 0 = sample with --temperature/--top-k/--top-p... default 5)."),
    lenpen: float = typer.Option(1.0, "--lenpen", rich_help_panel=MT, help="Length penalty: scores divided by length**lenpen."),
    max_len_a: float = typer.Option(1.2, "--max-len-a", rich_help_panel=MT, help="Max target length = a * source length + b."),
    max_len_b: int = typer.Option(10, "--max-len-b", rich_help_panel=MT, help="Max target length = a * source length + b."),
    preset: Optional[str] = typer.Option(None, "--preset", rich_help_panel=GEBM, help="Presets (comma list) whose [sample] tables set the GEBM sampler; the flags below override them."),
    sampler: str = typer.Option(_S.sampler, "--sampler", rich_help_panel=GEBM, help="kla | ula | none (the generator alone)."),
    steps: int = typer.Option(_S.steps, "--steps", rich_help_panel=GEBM, help="Langevin steps."),
    step_size: float = typer.Option(_S.step_size, "--step-size", rich_help_panel=GEBM, help="lambda (official --lmc_gamma): ULA step lambda, KLA time step h = 2 sqrt(lambda)."),
    beta: float = typer.Option(_S.beta, "--beta", rich_help_panel=GEBM, help="Inverse temperature of the energy in U(z) = |z|^2/2 + beta E(G(z))."),
    friction: float = typer.Option(_S.friction, "--friction", rich_help_panel=GEBM, help="KLA friction kappa."),
    mass: float = typer.Option(_S.mass, "--mass", rich_help_panel=GEBM, help="KLA mass u."),
    decay_every: int = typer.Option(_S.decay_every, "--decay-every", rich_help_panel=GEBM, help="Multiply lambda by --decay every this many steps."),
    decay: float = typer.Option(_S.decay, "--decay", rich_help_panel=GEBM, help="Factor on lambda (KLA's h shrinks by its square root)."),
    out: Optional[str] = typer.Option(None, "--out", "-o", rich_help_panel=GEBM, help="GEBM: output file (.png grid, .npy, .csv)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --out file."),
):
    """Generate: one line per sample on stdout, in input order (--json for scores).

    \b
    Examples:
      echo "it was a truth" | lmlab sample -c runs/demo/checkpoints/best.pt -n 3 --top-p 0.9
      lmlab sample -c runs/residual-demo/checkpoints/best.pt --candidates 32 --top-k 10 < prefixes.txt
      lmlab sample -c runs/mt/checkpoints/best.pt --beam 5 < test.de > hyp.en
      lmlab sample -c runs/gebm/checkpoints/best.pt --sampler kla -n 64 -o samples.png
    """
    from lmlab.core import distributed
    _check_values(num_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                  top_p=top_p, batch_size=batch_size, candidates=candidates, beam=beam, max_len_a=max_len_a,
                  max_len_b=max_len_b, device=device)
    dev = distributed.pick_device(device)
    state = load_checkpoint(checkpoint, ("lm", "residual-ebm", "seq2seq", "gebm"))
    kind = state["kind"]
    _refuse_ignored(ctx, kind, beam)
    if kind == "gebm":
        from pathlib import Path
        from lmlab.cli.common import given, make_reporter
        from lmlab.core.gebm.sample import sample as gebm_sample, sampler_config, write_samples
        if out is None:
            raise LmlabError("GEBM sampling writes a file: pass --out samples.png (or .npy/.csv)")
        if Path(out).exists() and not force:
            raise LmlabError(f"--out {out} exists; pass --force to overwrite it")
        flags = {"sampler": sampler, "steps": steps, "step_size": step_size, "beta": beta, "friction": friction,
                 "mass": mass, "decay_every": decay_every, "decay": decay, "num_samples": num_samples}
        flags = {k: flags[k] for k in given(ctx, *flags)}  # only the flags set on the command line
        cfg = sampler_config([preset] if preset else None, **flags)  # SamplerConfig <- presets' [sample] <- flags
        reporter = make_reporter()  # a bar on a terminal, a line every 10 s in a batch job: long chains are not silent
        reporter.start(cfg.num_samples, f"sampling {cfg.sampler}")
        samples = gebm_sample(state, cfg, seed=seed, device=str(dev), progress=lambda done, _: reporter.update(done))
        reporter.finish()
        write_samples(samples, out)
        print(json.dumps({"out": out, "num_samples": int(samples.shape[0]), "sampler": cfg.sampler}))
        return
    if preset:
        raise LmlabError("--preset sets the GEBM sampler ([sample] tables); this checkpoint is not a GEBM")
    prompts = _read_prompts(input_)
    if kind == "seq2seq":
        from lmlab.core.seq2seq.generate import translate_lines
        if not prompts:
            raise LmlabError("translation needs source sentences on stdin or --input")
        hyps = translate_lines(state, prompts, beam=beam or 5, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b,
                               sampling=beam == 0 and (top_k > 0 or top_p < 1.0 or temperature != 1.0), temperature=temperature,
                               top_k=top_k, top_p=top_p, batch_size=batch_size, seed=seed, device=str(dev))
        _write(prompts, [[h] for h in hyps], json_out)
        return
    if kind == "residual-ebm":
        from lmlab.cli.common import given, make_reporter
        from lmlab.core.residual.sample import sample_lines as residual_sample
        # --max-new-tokens not given: the energy's own continuation length (the LM's 50 may not fit its window)
        length = max_new_tokens if given(ctx, "max_new_tokens") else None
        outs = residual_sample(state, prompts if prompts is not None else [""], num_samples=num_samples, candidates=candidates,
                               top_k=top_k, temperature=temperature, top_p=top_p, max_new_tokens=length,
                               batch_size=batch_size, seed=seed, device=str(dev), with_scores=json_out,
                               log=make_reporter(False).log)
        _write(prompts if prompts is not None else [""], outs, json_out)
        return
    from lmlab.core.generate import load_lm
    from lmlab.core.sampling import sample_text
    model, tokenizer, info = load_lm(state, dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    outs = sample_text(model, tokenizer, info, prompts if prompts is not None else [""], num_samples=num_samples,
                       max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                       batch_size=batch_size, generator=gen, with_scores=json_out)
    _write(prompts if prompts is not None else [""], outs, json_out)


def _check_values(**values) -> None:
    """Range checks of the flags every kind shares (GEBM sampler values are checked by its SamplerConfig)."""
    from lmlab.core.config import DEVICE, at_least, between, greater_than
    rules = {"num_samples": ("--num-samples", at_least(1)), "max_new_tokens": ("--max-new-tokens", at_least(1)),
             "temperature": ("--temperature", greater_than(0)), "top_k": ("--top-k", at_least(0)),
             "top_p": ("--top-p", between(0, 1, lo_open=True)), "batch_size": ("--batch-size", at_least(1)),
             "candidates": ("--candidates", at_least(1)), "beam": ("--beam", at_least(0)),
             "max_len_a": ("--max-len-a", at_least(0)), "max_len_b": ("--max-len-b", at_least(0)), "device": ("--device", DEVICE)}
    for name, value in values.items():
        flag, rule = rules[name]
        check_flag(flag, value, rule)


_MT_FLAGS = ("beam", "lenpen", "max_len_a", "max_len_b")
_GEBM_FLAGS = ("sampler", "steps", "step_size", "beta", "friction", "mass", "decay_every", "decay", "out", "force")
_IGNORED_BY = {  # flags a checkpoint kind would ignore: refused, never dropped silently
    "lm": _MT_FLAGS + ("candidates",) + _GEBM_FLAGS,
    "residual-ebm": _MT_FLAGS + _GEBM_FLAGS,
    "seq2seq": ("num_samples", "max_new_tokens", "candidates") + _GEBM_FLAGS,
    "gebm": ("input_", "max_new_tokens", "temperature", "top_k", "top_p", "json_out", "batch_size", "candidates") + _MT_FLAGS,
}
_KIND_NAME = {"lm": "a language model", "residual-ebm": "a residual EBM", "seq2seq": "a translation model", "gebm": "a GEBM"}


def _refuse_ignored(ctx, kind: str, beam: int) -> None:
    refuse(ctx, _IGNORED_BY.get(kind, ()), f"the checkpoint is {_KIND_NAME.get(kind, kind)}; `lmlab sample --help` "
           "groups the flags by the kind of checkpoint they are for")
    if kind == "seq2seq" and beam > 0:
        refuse(ctx, ("temperature", "top_k", "top_p"), "a translation is sampled only with --beam 0; beam search is deterministic")


def _write(prompts: list[str], outs: list[list], json_out: bool) -> None:
    for prompt, samples in zip(prompts, outs):
        for i, s in enumerate(samples):
            if json_out:
                record = s if isinstance(s, dict) else {"text": s}
                print(json.dumps({"prompt": prompt, "sample": i, **record}, ensure_ascii=False))
            else:
                print(s["text"] if isinstance(s, dict) else s)
    sys.stdout.flush()
