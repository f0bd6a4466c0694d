"""Cell data: the dataset on disk (generated if the spec says so), its fingerprint, and each cell's items."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from growthpace.platform.core.formulation import FormulationError, formulate, split_name, with_choice_target
from growthpace.platform.core.allocation import Pool, card
from growthpace.platform.core.items import DataError, Record
from growthpace.platform.data.corpus import corpus_digests
from growthpace.platform.data.records import (curated_path, declare, jsonl_files, ood_path, read_messages, read_ood,
                                               read_records, read_split, read_synthetic, synthetic_path,
                                               write_records)
from growthpace.platform.core.abilities import ABILITIES
from growthpace.platform.core.identity import stable_hash
from growthpace.platform.core.spec import Spec, SpecError
from growthpace.platform.store.storage import Layout, StoragePath, file_sha256, is_remote, write_bytes, write_json


@dataclass
class Dataset:
    root: Path
    pool: Pool
    fingerprint: str
    corpus_digests: dict[str, str | None] = field(default_factory=dict)

    def train_records(self) -> list[Record]:
        """Every training item of every source (DoIT: curated, then synthetic)."""
        return ([r for by in self.pool.labeled.values() for rs in by.values() for r in rs]
                + [r for rs in self.pool.unlabeled.values() for r in rs])


def ensure_generated(spec: Spec) -> None:
    """Build the embedded procedural dataset at data.root when the spec asks and it is missing."""
    root = spec.data_root
    if spec.data.generate is None or (root / "curated").is_dir():
        return
    from growthpace.platform.data.generate import generate_dataset

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


def load_pool(root: Path, train_split: str, with_synthetic: bool) -> Pool:
    """The training items under a data root: the curated split per ability, and the synthetic pool if asked."""
    curated = read_split(root, train_split)
    synthetic = read_synthetic(synthetic_path(root)) if with_synthetic else None
    return Pool(curated, synthetic)


def load_dataset(spec: Spec) -> Dataset:
    root = spec.data_root
    if not root.is_dir():
        hint = " (or set data.generate to build the embedded dataset there)" if spec.data.generate is None else ""
        raise DataError(f"data.root: {root} does not exist{hint}")
    if spec.declared:
        pool, fingerprint = load_declared_pool(spec)
        return Dataset(root, pool, fingerprint, corpus_digests(spec))
    with_synth = "synthetic" in spec.data.source_names or any(m.synthetic for m in spec.data.mixes)
    pool = load_pool(root, spec.data.train_split, with_synth)
    return Dataset(root, pool, _fingerprint(root, spec.data.train_split, with_synth), corpus_digests(spec))


def source_files(spec: Spec, name: str) -> list[Path]:
    """The files a declared study's source is read from."""
    root, source = spec.data_root, spec.data.source(name)
    if spec.data.layout == "messages":
        return jsonl_files(root, source.train, f"data.sources ({name}).train")
    if source.labeled:
        return [curated_path(root, spec.data.train_split, a) for a in spec.ability_names]
    return [synthetic_path(root)]


def load_declared_pool(spec: Spec) -> tuple[Pool, str]:
    """A declared study's training items, every source under its own name, and the fingerprint of every
    byte that decides them: each file read, and how its lines were read (layout, ability field, which
    abilities and sources)."""
    names, d = spec.ability_names, spec.data
    labeled: dict[str, dict[str, list[Record]]] = {}
    unlabeled: dict[str, list[Record]] = {}
    h = hashlib.sha256(stable_hash([d.layout, d.ability_field, d.train_split, list(names),
                                    [d.source(n).model_dump() for n in d.source_names]]).encode())
    if any(m.synthetic for m in d.mixes) and all(d.source(n).labeled for n in d.source_names):
        raise SpecError("field 'data.mixes': a mix's `synthetic` items come from an unlabeled source "
                        "(labeled: false); data.sources has none")
    for name in d.source_names:
        source = d.source(name)
        files = source_files(spec, name)
        if d.layout == "messages":
            records = [r for f in files for r in read_messages(f, abilities=names, ability_field=d.ability_field,
                                                              labeled=source.labeled)]
        elif source.labeled:
            records = [r for rs in read_split(spec.data_root, d.train_split, names).values() for r in rs]
        else:
            records = read_synthetic(files[0], names)
        for f in files:
            h.update(str(f.relative_to(spec.data_root)).encode())
            file_sha256(f, h)
        if source.labeled:
            labeled[name] = {a: [r for r in records if r.type == a] for a in names}
        else:
            unlabeled[name] = records
    primary = labeled.get(d.primary_source, {a: [] for a in names})
    first_pool = next(iter(unlabeled.values()), [])
    return Pool(primary, first_pool, labeled=labeled, unlabeled=unlabeled), h.hexdigest()


def declared_eval_sets(spec: Spec) -> dict[tuple[str, str], tuple[Path, list[Record]]]:
    """(split, ability) -> (where it was read, items under their declaration) for a declared study;
    every declared ability needs test items."""
    names, d = spec.ability_names, spec.data
    scoring = {a.name: (a.kind, a.baseline) for a in spec.abilities}
    read: dict[tuple[str, str], tuple[Path, list[Record]]] = {}
    for split in spec.evaluation.splits:
        if d.layout == "messages":
            files = jsonl_files(spec.data_root, getattr(d, split), f"data.{split}")
            by: dict[str, list[Record]] = {a: [] for a in names}
            first: dict[str, Path] = {}
            for f in files:
                for r in read_messages(f, abilities=names, ability_field=d.ability_field, scoring=scoring):
                    by[r.type].append(r)
                    first.setdefault(r.type, f)
            for a in names:
                if not by[a]:
                    raise DataError(f"{files[0] if len(files) == 1 else files[0].parent}: field 'abilities' ({a}): "
                                    f"the declared ability {a!r} has no {split} items")
                read[(split, a)] = (first[a], by[a])
        else:
            for a, records in read_split(spec.data_root, split, names).items():
                path = curated_path(spec.data_root, split, a)
                read[(split, a)] = (path, [declare(r, *scoring[a], f"{path} (item {r.idx})") for r in records])
    return read


def declared_ood_set(spec: Spec, i: int) -> tuple[Path, list[Record]]:
    """The i-th declared OOD set (spec `ood:`): every item of its file is the set's, under its declaration."""
    o = spec.ood[i]
    path = spec.data_root / o.file
    if not path.is_file():
        raise DataError(f"{path}: no such data file (field 'ood[{i}].file')")
    if spec.data.layout == "messages":
        return path, read_messages(path, abilities=(o.name,), ability_field=None, ability=o.name,
                                   scoring={o.name: (o.kind, o.baseline)})
    records = read_records(path, eval_split=True, types=None)
    return path, [declare(replace(r, type=o.name), o.kind, o.baseline, f"{path} (item {r.idx})") for r in records]


def load_eval_sets(spec: Spec) -> dict[tuple[str, str], list[Record]]:
    """(split, ability or OOD subject) -> items, for every set the spec scores, in every formulation
    it lists (evaluation.formulation): the primary's under the split's own name, each other one's
    under ``test.letter`` etc. (platform/core/formulation.py ``split_name``)."""
    read: dict[tuple[str, str], tuple[Path, list[Record]]] = {}
    if spec.declared:
        read = declared_eval_sets(spec)
    else:
        for split in spec.evaluation.splits:
            for ability, records in read_split(spec.data_root, split).items():
                read[(split, ability)] = (curated_path(spec.data_root, split, ability), records)
    if spec.evaluation.ood and spec.declared:
        for i, o in enumerate(spec.ood):
            read[("ood", o.name)] = declared_ood_set(spec, i)
    elif spec.evaluation.ood:
        for subject, records in read_ood(spec.data_root, spec.ood_subjects).items():
            read[("ood", subject)] = (ood_path(spec.data_root, subject), records)
    formulations = spec.evaluation.formulation
    sets: dict[tuple[str, str], list[Record]] = {}
    for formulation in formulations:
        for (split, ability), (path, records) in read.items():
            own = spec.ability(ability)
            used = formulation
            if own is not None and own.formulation is not None:  # the ability's own: scored once, as the primary
                if formulation != formulations[0]:
                    continue
                used = own.formulation
            try:
                sets[(split_name(split, formulation, formulations[0]), ability)] = [formulate(r, used) for r in records]
            except FormulationError as e:
                field = f"abilities ({ability}).formulation" if used != formulation else "evaluation.formulation"
                raise DataError(f"{path}: {ability} {e} ({field}: {used})") from None
    return sets


def write_cell_data(layout: Layout, cell, dataset: Dataset) -> dict:
    """Write a cell's items and card, once; the card is returned."""
    path = layout.cell_data(cell.cell_id)
    card_path = layout.cell_card(cell.cell_id)
    if path.exists() and card_path.exists():
        from growthpace.platform.store.storage import read_json

        return read_json(card_path)
    target = cell.training.get("choice_target", "letter")
    records = [with_choice_target(r, target) for r in dataset.pool.select(cell.allocation, cell.seed)]
    if is_remote(path):
        with tempfile.TemporaryDirectory() as d:
            write_records(Path(d) / path.name, records)
            write_bytes(path, (Path(d) / path.name).read_bytes())
    else:
        tmp = path.with_suffix(".jsonl.tmp")
        write_records(tmp, records)
        tmp.replace(path)
    info = {"cell_id": cell.cell_id, **card(records, tuple(dataset.pool.curated))}
    write_json(card_path, info)
    return info


def write_cell_tokens(layout: Layout, cell, tokenizer) -> StoragePath:
    """Tokenize a cell's items once, with its base model's tokenizer and the cell's max_length, so no
    rank of any trial tokenizes them again; written once, next to the cell's items."""
    from growthpace.platform.data.chat import framing_for
    from growthpace.platform.data.records import read_records
    from growthpace.platform.store.storage import localize

    path = layout.cell_tokens(cell.cell_id)
    if path.exists():
        return path
    # the cell's own file, written by write_cell_data: any ability name it holds was checked on the way in
    records = read_records(localize(layout.cell_data(cell.cell_id)), eval_split=False, types=None)
    examples = framing_for(tokenizer).examples([r.messages for r in records], cell.training["max_length"])
    write_bytes(path, tokens_bytes(examples))
    return path


def tokens_bytes(examples: list[tuple[list[int], list[int]]]) -> bytes:
    """(input ids, labels) pairs as one .npz: ids and labels end to end, and each item's offsets."""
    import io

    import numpy as np

    lengths = np.array([len(ids) for ids, _ in examples], dtype=np.int64)
    buf = io.BytesIO()
    np.savez(buf, ids=np.concatenate([np.asarray(i, np.int32) for i, _ in examples]),
             labels=np.concatenate([np.asarray(y, np.int32) for _, y in examples]),
             offsets=np.concatenate([[0], np.cumsum(lengths)]))
    return buf.getvalue()


def read_cell_tokens(path: "str | StoragePath") -> list[tuple[list[int], list[int]]]:
    """The (input ids, labels) pairs ``write_cell_tokens`` stored, in item order."""
    import io

    import numpy as np

    from growthpace.platform.store.storage import as_location

    with np.load(io.BytesIO(as_location(path).read_bytes())) as z:
        ids, labels, offsets = z["ids"], z["labels"], z["offsets"]
    return [(ids[a:b].tolist(), labels[a:b].tolist()) for a, b in zip(offsets[:-1], offsets[1:])]


def base_tokenizer(base: "str | StoragePath"):
    """The tokenizer saved with a base model folder; from an object store only its small files are
    fetched (never the weights, which may be a 33b's)."""
    from transformers import AutoTokenizer

    from growthpace.platform.store.storage import as_location

    base = as_location(base)
    if not is_remote(base):
        return AutoTokenizer.from_pretrained(base)
    with tempfile.TemporaryDirectory() as d:
        for f in base.iterdir():
            if f.suffix not in (".safetensors", ".bin") and f.is_file():
                (Path(d) / f.name).write_bytes(f.read_bytes())
        return AutoTokenizer.from_pretrained(d)
