"""Builders: a GEBM's (base, energy) pair from its resolved config, and back from a checkpoint."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lmlab.core.config import from_dict, upgrade
from lmlab.core.distributed import pick_device
from lmlab.core.errors import LmlabError
from lmlab.core.gebm.config import Config
from lmlab.core.gebm.nets import ConvEnergy, ImageBase, MLPEnergy, ResNetEnergy


def build(cfg: Config, data_dim: int | None = None) -> tuple[nn.Module, nn.Module]:
    """(base, energy) for an image run, or for a density run of dimension `data_dim`."""
    m = cfg.model
    if cfg.data.kind == "image":
        if m.energy not in ("sn-convnet", "dcgan", "resnet-sn"):
            raise LmlabError(f"model.energy={m.energy!r} is a density energy; image runs take sn-convnet, dcgan or "
                             "resnet-sn")
        base = ImageBase(m.latent_dim, m.width, m.generator)  # built first: the initialisation draws in this order
        energy = (ResNetEnergy(m.width, floor=m.energy_floor) if m.energy == "resnet-sn"
                  else ConvEnergy(m.width, spectral=(m.energy == "sn-convnet"), floor=m.energy_floor))
        return base, energy
    if not data_dim:
        raise LmlabError("density runs need the data dimension to build the flow")
    from lmlab.core.gebm.flows import CombinedFlowEnergy, FlowBase, FlowEnergy  # plain-torch RealNVP flows
    if m.flow != "nvp" and data_dim < 2:
        raise LmlabError(f"model.flow={m.flow}: a MADE layer needs data of 2 or more dimensions")
    base = FlowBase(data_dim, m.flow_transforms, m.flow_hidden, m.flow)
    if m.energy == "flow-combined":
        energy = CombinedFlowEnergy(data_dim, base, m.flow_transforms, m.flow_hidden, m.flow)
    elif m.energy == "flow":
        energy = FlowEnergy(data_dim, m.flow_transforms, m.flow_hidden, m.flow)
    elif m.energy == "mlp":
        energy = MLPEnergy(data_dim, m.mlp_hidden)
    else:
        raise LmlabError(f"model.energy={m.energy!r} is an image energy; density runs take flow or mlp")
    return base, energy


def from_state(state: dict[str, Any], device: str | torch.device = "cpu"):
    """(cfg, base, energy, A) from a `gebm` checkpoint; nets in eval mode on `device`."""
    if "config" not in state:
        raise LmlabError("checkpoint has no 'config': it was not written by lmlab train-ebm --kind gebm")
    cfg = from_dict(Config, upgrade(Config, state["config"]))  # a checkpoint from before issue #13 loads too
    dev = pick_device(device) if isinstance(device, str) else device
    base, energy = build(cfg, state.get("data_dim"))
    try:
        base.load_state_dict(state["base"])
        energy.load_state_dict(state["energy"])
    except (RuntimeError, KeyError) as exc:
        raise LmlabError(f"checkpoint weights do not match its config ({str(exc).splitlines()[0]})") from exc
    base.to(dev).eval()
    energy.to(dev).eval()
    log_partition = float(state.get("log_partition", torch.zeros(())).reshape(-1)[0]) if "log_partition" in state else 0.0
    return cfg, base, energy, log_partition
