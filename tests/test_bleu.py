"""`lmlab bleu` agrees with sacrebleu's own CLI to the digit; errors are one line."""

import json
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from lmlab.cli.bleu import bleu
from lmlab.core.seq2seq.bleu import looks_tokenized

HYP = ["A man in an orange hat looks at something.", "A Boston terrier runs on green grass in front of a fence.",
       "A girl in a karate uniform breaks a stick with a kick.", "Five people in winter jackets and helmets stand in snow.",
       "People are fixing the roof of a house.", "A man in light clothes photographs a group of men."]
REF = ["A man in an orange hat starring at something.", "A Boston Terrier is running on lush green grass in front of a white fence.",
       "A girl in karate uniform breaking a stick with a front kick.", "Five people wearing winter jackets and helmets stand in the snow, with snowmobiles in the background.",
       "People are fixing the roof of a house.", "A man in light colored clothing photographs a group of men wearing dark suits and hats standing around a woman dressed in a strapless gown."]
REF2 = ["A man with an orange hat stares at something.", "A terrier runs on the grass in front of a white fence.",
        "A girl in a karate uniform breaks a stick with a kick.", "Five people in winter jackets stand in the snow.",
        "Some people fix a roof.", "A man photographs a group of men in suits."]


def app():
    a = typer.Typer()
    a.command()(bleu)
    return a


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name, lines in (("hyp", HYP), ("ref", REF), ("ref2", REF2)):
        paths[name] = tmp_path / f"{name}.txt"
        paths[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def sacrebleu_cli(*args):
    return subprocess.run([sys.executable, "-m", "sacrebleu", *map(str, args)], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("extra", [[], ["-w", "4"], ["-lc"], ["--tokenize", "intl"]])
def test_score_only_matches_sacrebleu_cli(files, extra):
    ours = CliRunner().invoke(app(), [str(files["ref"]), str(files["ref2"]), "-b", *extra], input="\n".join(HYP) + "\n")
    assert ours.exit_code == 0, ours.output
    theirs = sacrebleu_cli(files["ref"], files["ref2"], "-i", files["hyp"], "-b", *extra)
    assert ours.stdout.strip() == theirs.strip()
    assert float(theirs) > 10  # a real, non-trivial score


def test_text_and_json_match_sacrebleu_cli(files):
    runner = CliRunner()
    text = runner.invoke(app(), [str(files["ref"]), "-i", str(files["hyp"]), "-m", "bleu,chrf", "-w", "2"])
    theirs = sacrebleu_cli(files["ref"], "-i", files["hyp"], "-m", "bleu", "chrf", "-f", "text", "-w", "2")
    assert [line.strip() for line in text.stdout.splitlines()] == [line.strip() for line in theirs.splitlines()]
    assert "version:" in text.stdout  # the signature is always printed
    ours = json.loads(runner.invoke(app(), [str(files["ref"]), "-i", str(files["hyp"]), "--json"]).stdout)
    theirs = json.loads(sacrebleu_cli(files["ref"], "-i", files["hyp"]))
    assert ours == theirs


def test_errors_are_one_line(files, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app(), [str(tmp_path / "nope.txt"), "-i", str(files["hyp"])])
    assert missing.exit_code != 0 and "nope.txt" in missing.output and "Traceback" not in missing.output
    short = tmp_path / "short.txt"
    short.write_text("one line\n")
    mismatch = runner.invoke(app(), [str(short), "-i", str(files["hyp"])])
    assert mismatch.exit_code != 0 and "1 lines" in mismatch.output and "6" in mismatch.output
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Männer\n".encode("latin-1"))
    bad = runner.invoke(app(), [str(latin), "-i", str(latin)])
    assert bad.exit_code != 0 and "UTF-8" in bad.output


def test_tokenized_input_warns(files):
    tokenized = [h.replace(".", " .").replace(",", " ,") for h in HYP]
    assert looks_tokenized(tokenized) and not looks_tokenized(HYP)
    assert looks_tokenized(["the hou@@ se is red", "a dog@@ s"])
    res = CliRunner().invoke(app(), [str(files["ref"]), "-b"], input="\n".join(tokenized) + "\n")
    assert "look tokenized" in res.stderr


# -------------------------------------------------------------------------- sacrebleu's defaults, CI, paired bootstrap
CASED = ["a man in an orange hat looks at something.", "A BOSTON terrier runs on green grass in front of a fence.",
         "a girl in a karate uniform breaks a stick with a kick.", "FIVE people in winter jackets and helmets stand in snow.",
         "People are fixing the roof of a house.", "a man in light clothes photographs a group of men."]


@pytest.fixture
def cased(files, tmp_path):
    files["cased"] = tmp_path / "cased.txt"
    files["cased"].write_text("\n".join(CASED) + "\n", encoding="utf-8")
    return files


@pytest.mark.parametrize("extra, theirs_extra", [([], []), (["-lc"], ["-lc"]), (["--chrf-lowercase"], ["--chrf-lowercase"]),
                                                 (["--ter-case-sensitive"], ["--ter-case-sensitive"])])
def test_case_handling_matches_sacrebleu_cli_for_every_metric(cased, extra, theirs_extra):
    """TER is case-insensitive by default and -lc is BLEU's only, as in sacrebleu's CLI."""
    ours = CliRunner().invoke(app(), [str(cased["ref"]), "-i", str(cased["cased"]), "-m", "bleu,chrf,ter", "-w", "4", "--json", *extra])
    assert ours.exit_code == 0, ours.output
    theirs = json.loads(sacrebleu_cli(cased["ref"], "-i", cased["cased"], "-m", "bleu", "chrf", "ter", "-w", "4", *theirs_extra))
    assert json.loads(ours.stdout) == theirs


def test_lowercase_flags_change_only_their_metric(cased):
    def scores(*extra):
        out = CliRunner().invoke(app(), [str(cased["ref"]), "-i", str(cased["cased"]), "-m", "bleu,chrf,ter", "-w", "4", "-b", *extra])
        return [float(x) for x in out.stdout.split()]
    base, lc, chrf_lc, ter_cs = scores(), scores("-lc"), scores("--chrf-lowercase"), scores("--ter-case-sensitive")
    assert lc[0] != base[0] and lc[1:] == base[1:]
    assert chrf_lc[1] != base[1] and chrf_lc[0] == base[0] and chrf_lc[2] == base[2]
    assert ter_cs[2] > base[2] and ter_cs[:2] == base[:2]  # case mismatches count as TER edits


def test_confidence_matches_sacrebleu_api_and_cli(files):
    import sacrebleu
    ours = CliRunner().invoke(app(), [str(files["ref"]), "-i", str(files["hyp"]), "-m", "bleu,chrf", "--confidence", "--json", "-w", "3"])
    assert ours.exit_code == 0, ours.output
    got = json.loads(ours.stdout)
    assert got == json.loads(sacrebleu_cli(files["ref"], "-i", files["hyp"], "-m", "bleu", "chrf", "-ci", "-w", "3"))
    api = sacrebleu.metrics.BLEU().corpus_score(HYP, [REF], n_bootstrap=1000)
    assert got[0]["confidence_mean"] == round(api._mean, 3) and got[0]["confidence_var"] == round(api._ci, 3)
    assert "bs:1000" in got[0]["signature"]


def test_paired_bootstrap_matches_sacrebleu_api(files, cased):
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest
    runner = CliRunner()
    out = runner.invoke(app(), [str(files["ref"]), "-i", str(files["hyp"]), "-i", str(cased["cased"]), "-m", "bleu,chrf",
                                "--paired-bs", "--json", "-w", "6"])
    assert out.exit_code == 0, out.output
    ours = json.loads(out.stdout)
    metrics = {"BLEU": BLEU(references=[REF]), "CHRF": CHRF(references=[REF])}
    sigs, scores = PairedTest([("base", HYP), ("other", CASED)], metrics, references=None, test_type="bs", n_samples=1000)()
    assert [r["system"] for r in ours["systems"]] == [str(files["hyp"]), str(cased["cased"])] and ours["systems"][0]["baseline"]
    for metric in ("BLEU", "chrF2"):
        assert ours["signatures"][metric] == str(sigs[metric])
        for row, res in zip(ours["systems"], scores[metric]):
            assert row[metric]["score"] == round(res.score, 6)
            assert row[metric]["mean"] == round(float(res.mean), 6) and row[metric]["ci"] == round(float(res.ci), 6)
            assert row[metric]["p_value"] == (None if res.p_value is None else pytest.approx(float(res.p_value)))
    assert ours["systems"][1]["BLEU"]["p_value"] is not None and ours["n_samples"] == 1000
    text = runner.invoke(app(), [str(files["ref"]), "-i", str(files["hyp"]), "-i", str(cased["cased"]), "--paired-bs"])
    assert text.exit_code == 0 and "Baseline: " in text.stdout and "p = " in text.stdout and "BLEU|nrefs:1|bs:1000" in text.stdout


@pytest.mark.parametrize("argv, fragment", [
    (["-w", "-1"], "--width"),
    (["--paired-bs"], "--paired-bs"),
    (["--confidence-n", "0"], "--confidence-n"),
])
def test_bad_flags_are_one_line(files, argv, fragment):
    res = CliRunner().invoke(app(), [str(files["ref"]), "-i", str(files["hyp"]), *argv])
    assert res.exit_code != 0 and "Traceback" not in res.output
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and fragment in lines[0], res.stderr


def test_empty_hypotheses_and_references_say_so(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    res = CliRunner().invoke(app(), [str(empty), "-i", str(empty)])
    assert res.exit_code != 0 and "no sentence" in res.stderr and "Traceback" not in res.output
