"""lmlab eval-ppl: perplexity of a checkpoint on a data-dir split or on raw text from stdin."""

from __future__ import annotations

import sys
from typing import Optional

import numpy as np
import typer

from lmlab.cli.common import check_flag, handle_errors, make_reporter, refuse, strict_json
from lmlab.core.checkpoint import load_checkpoint
from lmlab.core.errors import LmlabError
from lmlab.core.reporting import progress_lines


@handle_errors
def eval_ppl(
    ctx: typer.Context,
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint (.pt) of train-lm or train-ebm --kind residual; e.g. runs/demo/checkpoints/best.pt"),
    data: Optional[str] = typer.Option(None, "--data", "-d", help="Data dir (default: the one the checkpoint was trained on)."),
    split: str = typer.Option("test", "--split", "-s", help="Split of the data dir to score."),
    input_: Optional[str] = typer.Option(None, "--input", "-i", help="Raw text file to score instead of a split ('-' = stdin); tokenized with the checkpoint's tokenizer, <eos> after each line; read as one stream."),
    ngram: Optional[str] = typer.Option(None, "--ngram", help="Score an n-gram baseline instead of a checkpoint: unigram (add-one) or kn-bigram (needs --data)."),
    batch_size: int = typer.Option(10, "--batch-size", help="Speed only, never which tokens are scored. LSTM on a split: contiguous segments read in parallel (1 = the whole split as one stream; segments after the first start from a zero state --bptt tokens early); Transformer: windows per batch; residual EBM: examples per batch."),
    bptt: int = typer.Option(35, "--bptt", help="LSTM: tokens per forward window (state carried across), and the burn-in of each segment after the first."),
    stride: Optional[int] = typer.Option(None, "--stride", help="Transformer sliding window: new tokens per window (default: context/2)."),
    is_samples: str = typer.Option("1,2,4,8,16,32,64", "--is-samples", help="Residual EBM: numbers n of LM samples for the log Z estimates (the tightening curve)."),
    max_examples: int = typer.Option(0, "--max-examples", help="Residual EBM, or an LM with --windows: score at most this many prefix/continuation pairs (0: all)."),
    per_position: int = typer.Option(0, "--per-position", help="Residual EBM: also the joint model's gain at each continuation position (the paper's Figure 3), from this many LM futures per position and window (0: off; cost ~ continuation length / 2 times the bracket's)."),
    windows: Optional[str] = typer.Option(None, "--windows", help="LM: score as a residual EBM is scored, PREFIX,CONTINUATION (e.g. 40,20): the split cut into windows of that many tokens, only each window's continuation counted, given its prefix; puts a baseline LM beside a joint model's bracket on the same tokens (with --max-examples)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N | mps"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | bf16 | fp16 autocast (LM checkpoints)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the residual EBM's importance samples."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output on stderr."),
):
    """Perplexity, labelled: nats/token, bits/token and ppl, as one JSON object on stdout.

    Every token of the split (or text) after the first is predicted exactly once, whatever --batch-size:
    `tokens` is the same for every batch size, and `streams`/`burn_in_tokens` say how an LSTM read it.

    \b
    Examples:
      lmlab eval-ppl -c runs/demo/checkpoints/best.pt --split test
      echo "the cat sat on the mat ." | lmlab eval-ppl -c runs/demo/checkpoints/best.pt -i -
      lmlab eval-ppl --ngram unigram --data data/demo --split valid
      lmlab eval-ppl -c runs/demo-ebm/checkpoints/best.pt --split test --is-samples 1,4,16,64
      lmlab eval-ppl -c runs/demo-ebm/checkpoints/best.pt --split test --per-position 8 --max-examples 64
      lmlab eval-ppl -c runs/demo/checkpoints/best.pt --split test --windows 24,16   # an LM on the same windows
    """
    from lmlab.core import distributed
    from lmlab.core.config import DEVICE, at_least

    reporter = make_reporter(quiet)
    check_flag("--batch-size", batch_size, at_least(1))
    check_flag("--bptt", bptt, at_least(1))
    if stride is not None:
        check_flag("--stride", stride, at_least(1))
    check_flag("--max-examples", max_examples, at_least(0))
    check_flag("--per-position", per_position, at_least(0))
    check_flag("--device", device, DEVICE)
    if precision not in PRECISIONS:
        raise LmlabError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if ngram and checkpoint:
        raise LmlabError("--ngram and --checkpoint both given: score either an n-gram baseline or a checkpoint")
    if input_ is not None:
        refuse(ctx, ("data", "split"), "--input scores a text file, not a data-dir split")
    residual_only = ("is_samples", "seed", "per_position")
    if ngram:
        refuse(ctx, ("input_", "batch_size", "bptt", "stride", "device", "precision", "max_examples", "windows") + residual_only,
               "--ngram scores a data-dir split with a count-based baseline (it takes --data and --split)")
        result = _ngram(ngram, data, split)
        print(strict_json(result))
        return
    if not checkpoint:
        raise LmlabError("--checkpoint is required (or --ngram unigram|kn-bigram for a baseline)")
    dev = distributed.pick_device(device)
    state = load_checkpoint(checkpoint, ("lm", "residual-ebm", "seq2seq", "gebm"))
    kind = state["kind"]
    if kind == "residual-ebm":
        from lmlab.core.residual.evaluate import eval_joint_ppl
        refuse(ctx, ("input_", "bptt", "stride", "precision", "windows"), "a residual EBM is scored on data-dir windows "
               "(--split, --batch-size, --is-samples, --max-examples, --seed)")
        ns = _sample_counts(is_samples)
        from lmlab.core.data import trained_data_dir
        result = eval_joint_ppl(state, data or trained_data_dir(state, checkpoint), split, samples=ns, max_examples=max_examples,
                                batch_size=batch_size, seed=seed, device=str(dev), position_samples=per_position)
        print(strict_json({"checkpoint": checkpoint, "kind": kind, "split": split, **result}))
        return
    if kind != "lm":
        raise LmlabError(f"checkpoint {checkpoint} holds a '{kind}' model; eval-ppl scores 'lm' and 'residual-ebm' checkpoints")
    refuse(ctx, residual_only, "residual-EBM checkpoints only; this one is an LM")
    if windows is None:
        refuse(ctx, ("max_examples",), "an LM scores the whole split; --max-examples counts --windows (or residual-EBM windows)")
    from lmlab.core.evaluate import evaluate_lm
    from lmlab.core.generate import load_lm
    from lmlab.core.train.lm_trainer import autocast_factory

    model, tokenizer, info = load_lm(state, dev)
    context = model.context
    if context is None:
        refuse(ctx, ("stride",), "--stride sets a Transformer's sliding window; this checkpoint is an LSTM")
        if precision == "bf16" and dev.type == "cpu":
            from lmlab.core.train.config import BF16_CPU_LSTM
            raise LmlabError(f"--precision bf16: {BF16_CPU_LSTM}")
    else:
        refuse(ctx, ("bptt",), "--bptt sets an LSTM's window; this checkpoint is a Transformer (use --stride)")
    if windows is not None:
        refuse(ctx, ("input_", "bptt", "stride", "precision"), "--windows scores a data-dir split window by window")
        print(strict_json({"checkpoint": checkpoint, "split": split, **_lm_windows(model, info, checkpoint, state, data,
                                                                                     split, windows, max_examples,
                                                                                     batch_size, dev)}))
        return
    if input_ is not None:
        stream, source, streams = _encode_text(input_, tokenizer, info), input_, 1  # raw text: one stream
    else:
        from lmlab.core.data import DataDir, trained_data_dir
        data_dir = DataDir(data or trained_data_dir(state, checkpoint))
        if data_dir.tokenizer_sha256 != info["tokenizer_sha256"] or data_dir.vocab_size != info["vocab_size"]:
            raise LmlabError(f"data dir {data_dir.path} uses another vocabulary than checkpoint {checkpoint} "
                             f"({data_dir.vocab_size} vs {info['vocab_size']} tokens, different tokenizer.json); "
                             "prep it with --tokenizer <the training data dir>")
        stream, source, streams = data_dir.split(split), f"{data_dir.path}:{split}", batch_size
    unk = info["specials"].get("unk")
    result = evaluate_lm(model, stream, columns=streams, bptt=bptt, stride=stride or (context // 2 if context else None),
                         batch_size=batch_size, device=dev, unk_id=unk, autocast=autocast_factory(dev, precision),
                         every_token=True, progress=progress_lines(reporter, f"scoring {source}"))
    print(strict_json({"checkpoint": checkpoint, "source": source, **result}))


PRECISIONS = ("fp32", "bf16", "fp16")


def _lm_windows(model, info, checkpoint, state, data, split, windows, max_examples, batch_size, dev) -> dict:
    from lmlab.core.data import DataDir, trained_data_dir
    from lmlab.core.residual.evaluate import lm_windows_nll
    from lmlab.core.residual.windows import Windows
    try:
        prefix_len, continuation_len = (int(v) for v in windows.split(","))
    except ValueError:
        prefix_len = continuation_len = 0
    if prefix_len < 1 or continuation_len < 1:
        raise LmlabError(f"--windows {windows!r}: expected PREFIX,CONTINUATION token counts, both >= 1, e.g. 40,20")
    data_dir = DataDir(data or trained_data_dir(state, checkpoint))
    if data_dir.tokenizer_sha256 != info["tokenizer_sha256"]:
        raise LmlabError(f"data dir {data_dir.path} uses another tokenizer than checkpoint {checkpoint}")
    cut = Windows(data_dir.split(split), prefix_len, continuation_len, f"{data_dir.path}:{split}")
    return {"source": f"{data_dir.path}:{split}",
            **lm_windows_nll(model, cut, max_examples=max_examples, batch_size=batch_size, device=dev)}


def _sample_counts(text: str) -> list[int]:
    try:
        ns = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        ns = []
    if not ns or min(ns) < 1:
        raise LmlabError(f"--is-samples {text!r}: expected a comma list of positive integers, e.g. 1,4,16,64")
    return ns


def _encode_text(path: str, tokenizer, info) -> np.ndarray:
    from lmlab.core.textio import TextSource
    eos = info["specials"]["eos"]
    ids: list[int] = []
    for line in TextSource(path).lines():
        ids.extend(tokenizer.encode(line, add_special_tokens=False).ids)
        ids.append(eos)
    if len(ids) < 2:
        raise LmlabError(f"input {'<stdin>' if path == '-' else path} is empty: nothing to score")
    return np.asarray(ids, dtype=np.int64)


def _ngram(kind: str, data: str | None, split: str) -> dict:
    from lmlab.core.data import DataDir
    from lmlab.core.evaluate import unk_count
    if not data:
        raise LmlabError("--ngram needs --data (the data dir whose train split estimates the n-gram)")
    d = DataDir(data)
    stream = d.split(split)
    if kind == "unigram":
        from lmlab.core.evaluate import unigram_ppl
        return {"model": "unigram (add-one)", "source": f"{d.path}:{split}",
                **unigram_ppl(d.split("train"), stream, d.vocab_size, d.unk_id)}
    if kind == "kn-bigram":
        from lmlab.core.evaluate import _result
        from lmlab.core.imm import kn_bigram
        logp = kn_bigram.load_or_build(d.path).log_prob_stream(np.asarray(stream))
        return {"model": "interpolated modified Kneser-Ney bigram", "source": f"{d.path}:{split}",
                **_result(float(-logp.sum()), int(logp.size), unk_count(stream, d.unk_id))}
    raise LmlabError(f"--ngram {kind!r}: expected unigram or kn-bigram")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(typer.run(eval_ppl))
