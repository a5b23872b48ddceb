"""The `lmlab` entry point: one typer app, one subcommand per step of a pipeline."""

from __future__ import annotations

import sys

import typer

from lmlab import __version__
from lmlab.cli.average import average
from lmlab.cli.bleu import bleu
from lmlab.cli.cache_define import cache_define
from lmlab.cli.common import config_epilog, handle_errors
from lmlab.cli.eval_ppl import eval_ppl
from lmlab.cli.plot import plot
from lmlab.cli.prep import prep
from lmlab.cli.runs import runs
from lmlab.cli.sample import sample
from lmlab.cli.train_ebm import train_ebm
from lmlab.cli.train_lm import train_lm
from lmlab.core.gebm.config import Config as GEBMConfig
from lmlab.core.prep_config import PrepConfig
from lmlab.core.residual.config import Config as ResidualConfig
from lmlab.core.train.config import TrainConfig

app = typer.Typer(
    name="lmlab",
    help="Language-model and energy-based-model research from the shell: "
         "prep -> train-lm -> eval-ppl / sample; train-ebm; bleu; plot; runs. Every command takes --help.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

app.command("prep", epilog=config_epilog(PrepConfig))(prep)
app.command("train-lm", epilog=config_epilog(TrainConfig))(train_lm)
app.command("train-ebm", epilog="\n\n".join([
    config_epilog(ResidualConfig, "Config keys of --kind residual (set with --set KEY=VALUE; presets fill them)"),
    config_epilog(GEBMConfig, "Config keys of --kind gebm (set with --set KEY=VALUE; presets fill them)")]))(train_ebm)
app.command("sample")(sample)
app.command("eval-ppl")(eval_ppl)

app.command("bleu")(bleu)
app.command("plot")(plot)
app.command("cache-define")(cache_define)
app.command("average")(average)
app.command("runs")(runs)


@app.command("presets")
@handle_errors
def presets(name: str = typer.Argument(None, help="Show one preset's contents.")):
    """List the shipped presets (datasets, papers, hardware), or show one."""
    from importlib import resources
    from lmlab.core.config import preset_names, read_preset
    if name:
        path = resources.files("lmlab.presets") / f"{name}.toml"
        if not path.is_file():
            read_preset(name)  # raises the unknown-preset error
        print(path.read_text(encoding="utf-8"), end="")
        return
    for preset in preset_names():
        print(f"{preset:32s} {read_preset(preset).get('description', '')}")


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")):
    if version:
        print(f"lmlab {__version__}")
        raise typer.Exit()


def main() -> None:
    app(prog_name="lmlab")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
