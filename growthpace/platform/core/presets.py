"""The preset model shapes (LLaMA-style, head_dim 32): names a spec may use for models[].name."""

from __future__ import annotations

from dataclasses import dataclass


VOCAB_SIZE = 2048
MAX_POSITIONS = 2048


@dataclass(frozen=True)
class Preset:
    hidden: int
    layers: int
    heads: int
    intermediate: int


PRESETS: dict[str, Preset] = {
    "llama-nano": Preset(hidden=64, layers=2, heads=2, intermediate=176),
    "llama-micro": Preset(hidden=128, layers=2, heads=4, intermediate=344),
    "llama-mini": Preset(hidden=192, layers=3, heads=6, intermediate=512),
    "llama-small": Preset(hidden=256, layers=4, heads=8, intermediate=688),
    "llama-20m": Preset(hidden=512, layers=6, heads=16, intermediate=1376),
}
