"""Cell data: the dataset on disk (generated if the spec says so), its fingerprint, and each cell's items."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

from growthpace.platform.allocation import Pool, card
from growthpace.platform.records import (
    DataError,
    Record,
    curated_path,
    read_ood,
    read_split,
    synthetic_path,
    write_records,
)
from growthpace.platform.abilities import ABILITIES, OOD_SUBJECTS
from growthpace.platform.spec import Spec
from growthpace.platform.storage import Layout, file_sha256, is_remote, write_bytes, write_json


@dataclass
class Dataset:
    root: Path
    pool: Pool
    fingerprint: str

    def train_records(self) -> list[Record]:
        return [r for rs in self.pool.curated.values() for r in rs] + list(self.pool.synthetic)


def ensure_generated(spec: Spec) -> None:
    """Build the embedded procedural dataset at data.root when the spec asks and it is missing."""
    root = spec.data_root
    if spec.data.generate is None or (root / "curated").is_dir():
        return
    from growthpace.platform.generate import generate_dataset

    generate_dataset(root, **spec.data.generate.model_dump())


def _fingerprint(root: Path, train_split: str, with_synthetic: bool) -> str:
    h = hashlib.sha256()
    files = [curated_path(root, train_split, a) for a in ABILITIES]
    if with_synthetic:
        files.append(synthetic_path(root))
    for f in files:
        h.update(f.name.encode())
        file_sha256(f, h)
    return h.hexdigest()


def load_dataset(spec: Spec) -> Dataset:
    root = spec.data_root
    if not root.is_dir():
        hint = " (or set data.generate to build the embedded dataset there)" if spec.data.generate is None else ""
        raise DataError(f"data.root: {root} does not exist{hint}")
    with_synth = "synthetic" in spec.data.sources or any(m.synthetic for m in spec.data.mixes)
    pool = Pool.load(root, spec.data.train_split, with_synth)
    return Dataset(root, pool, _fingerprint(root, spec.data.train_split, with_synth))


def load_eval_sets(spec: Spec) -> dict[tuple[str, str], list[Record]]:
    """(split, ability or OOD subject) -> items, for every set the spec scores."""
    sets: dict[tuple[str, str], list[Record]] = {}
    for split in spec.evaluation.splits:
        for ability, records in read_split(spec.data_root, split).items():
            sets[(split, ability)] = records
    if spec.evaluation.ood:
        for subject, records in read_ood(spec.data_root, OOD_SUBJECTS).items():
            sets[("ood", subject)] = records
    return sets


def write_cell_data(layout: Layout, cell, dataset: Dataset) -> dict:
    """Write a cell's items and card, once; the card is returned."""
    path = layout.cell_data(cell.cell_id)
    card_path = layout.cell_card(cell.cell_id)
    if path.exists() and card_path.exists():
        from growthpace.platform.storage import read_json

        return read_json(card_path)
    records = dataset.pool.select(cell.allocation, cell.seed)
    if is_remote(path):
        with tempfile.TemporaryDirectory() as d:
            write_records(Path(d) / path.name, records)
            write_bytes(path, (Path(d) / path.name).read_bytes())
    else:
        tmp = path.with_suffix(".jsonl.tmp")
        write_records(tmp, records)
        tmp.replace(path)
    info = {"cell_id": cell.cell_id, **card(records)}
    write_json(card_path, info)
    return info
