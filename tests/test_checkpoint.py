import os
import pickle

import pytest
import torch

from lmlab.core.checkpoint import CorruptCheckpointError, load_checkpoint, save_checkpoint, strip_compile_prefix
from lmlab.core.errors import LmlabError


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/lmlab-pwned",))


def test_roundtrip_plain_types(tmp_path):
    state = {"model": {"w": torch.arange(6.0).view(2, 3)}, "step": 3, "rng": torch.get_rng_state(), "cfg": {"a": [1, "x"]}}
    save_checkpoint(tmp_path / "c.pt", state, "lm")
    back = load_checkpoint(tmp_path / "c.pt", "lm")
    assert torch.equal(back["model"]["w"], state["model"]["w"]) and back["step"] == 3 and back["kind"] == "lm"
    assert not list(tmp_path.glob("*.tmp"))


# the crafted file is a plain protocol-4 pickle, not torch.save's; torch warns about that before refusing it
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "lmlab-checkpoint", "kind": "lm", "payload": Exploit()}, path)
    marker = "/tmp/lmlab-pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    with pytest.raises(LmlabError, match="refused"):
        load_checkpoint(path, "lm")
    assert not os.path.exists(marker)
    with open(tmp_path / "raw.pkl", "wb") as f:
        pickle.dump(Exploit(), f)
    with pytest.raises(LmlabError):
        load_checkpoint(tmp_path / "raw.pkl")
    assert not os.path.exists(marker)


def test_truncated_empty_foreign_and_wrong_kind(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"model": {"w": torch.zeros(1000)}}, "lm")
    data = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(LmlabError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "trunc.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(LmlabError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(LmlabError, match="not an lmlab checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "notes.pt").write_text("root:x:0:0:root:/root:/bin/bash\n")  # was an IndexError traceback
    (tmp_path / "zeros.pt").write_bytes(bytes(4096))  # a zero-filled block, as some crashes leave a file
    (tmp_path / "noise.pt").write_bytes(bytes(range(1, 256)))  # was refused as "asks to run code"
    for name in ("notes.pt", "zeros.pt", "noise.pt"):
        with pytest.raises(CorruptCheckpointError, match="is not a checkpoint file"):
            load_checkpoint(tmp_path / name)
    with pytest.raises(LmlabError, match="holds a 'lm' model"):
        load_checkpoint(tmp_path / "c.pt", "gebm")
    with pytest.raises(LmlabError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_strip_compile_and_ddp_prefixes():
    sd = {"_orig_mod.embed.w": 1, "body._orig_mod.layers.0": 2, "module.output.b": 3}
    assert strip_compile_prefix(sd) == {"embed.w": 1, "body.layers.0": 2, "output.b": 3}


UMASK_PROBE = r"""
import json, os, stat, sys
from pathlib import Path
from lmlab.core.checkpoint import save_checkpoint
from lmlab.core.prep import prep
from lmlab.core.rundir import RunDir
from lmlab.core.textio import TextSource
root, text = Path(sys.argv[1]), sys.argv[2]
prep(root / "data" / "d", {"train": [TextSource(text)], "valid": [TextSource(text)]})
run = RunDir(root / "runs" / "r")
run.prepare({"seed": 1})
save_checkpoint(run.last, {"step": 1}, "lm")
mode = lambda p: oct(stat.S_IMODE(p.stat().st_mode))
print(json.dumps({str(p.relative_to(root)): mode(p) for p in sorted(root.rglob("*"))}))
"""


@pytest.mark.parametrize("umask,file_mode,dir_mode", [(0o002, "0o664", "0o775"), (0o022, "0o644", "0o755"),
                                                      (0o077, "0o600", "0o700")])
def test_data_dirs_and_run_files_honour_the_umask(tmp_path, tiny_text, umask, file_mode, dir_mode):
    """tempfile makes 0600 files and 0700 dirs whatever the umask; a group sharing data (umask 002) must be able to
    read a prepped data dir, config.json and last.pt, so what is renamed into place gets the umask's mode."""
    import json
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", UMASK_PROBE, str(tmp_path / "w"), str(tiny_text["train"])],
                         preexec_fn=lambda: os.umask(umask), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    modes = json.loads(out.stdout)
    for name in ("data/d/meta.json", "data/d/tokenizer.json", "data/d/train.bin", "runs/r/config.json",
                 "runs/r/checkpoints/last.pt"):
        assert modes[name] == file_mode, (name, modes)
    for name in ("data/d", "runs/r", "runs/r/checkpoints"):
        assert modes[name] == dir_mode, (name, modes)


class _DiesHalfway:
    """A file whose write puts down half the bytes, then fails as a full disk or a kill would."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        self.f.write(bytes(data)[: len(data) // 2])
        self.f.flush()
        raise OSError(28, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def __getattr__(self, name):
        return getattr(self.f, name)


def test_a_save_that_dies_halfway_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    """Readers see the old or the new checkpoint, never a mix: the bytes go to a temporary file renamed over the
    target only once complete, so a write that fails midway leaves the last checkpoint loadable and no debris."""
    import builtins

    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1, "w": torch.zeros(1000)}, "lm")
    before = path.read_bytes()
    for module, name in ((builtins, "open"), (os, "fdopen")):  # whichever way the writer opens the file
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, **k: _DiesHalfway(_real(*a, **k))
                            if "w" in (a[1] if len(a) > 1 else k.get("mode", "r")) else _real(*a, **k))
    with pytest.raises(LmlabError, match="cannot write"):
        save_checkpoint(path, {"step": 2, "w": torch.ones(1000)}, "lm")
    monkeypatch.undo()
    assert path.read_bytes() == before and load_checkpoint(path, "lm")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no half-written temporary left behind
