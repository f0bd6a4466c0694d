"""The study's public dataset (DoIT on the Hugging Face Hub): fetch it, check its layout, or declare it.

* ``fetch(spec)``: a ``huggingface_hub.snapshot_download`` of ``data.hub.repo_id`` at the pinned
  ``data.hub.revision`` into ``data.root`` (through a partial folder renamed at the end, so an
  interrupted download resumes and never leaves a half dataset at ``data.root``). Offline, it still
  succeeds from the Hub cache; otherwise it fails with an error naming the settings to change.
* ``check_layout(root, ...)``: the files the spec will read, listed when missing.
* ``declared_dataset(spec)``: what ``growthpace plan`` uses when ``data.root`` is absent and the spec
  declares the dataset's counts (``data.declared``): a pool with counts and no records.

The synthetic file of the public dataset (``synthetic/40960/general_instruction_gpt4_41k.json``) has no
ability labels: its records are read as type ``synthetic`` (records.read_synthetic); they fill a cell's
total and count toward no ability.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from growthpace.platform.data.corpus import corpus_digests
from growthpace.platform.core.abilities import ABILITIES, OOD_SUBJECTS
from growthpace.platform.core.items import DataError
from growthpace.platform.data.records import curated_path, ood_path, synthetic_path
from growthpace.platform.core.spec import Spec
from growthpace.platform.store.storage import write_json
from growthpace.platform.core.identity import stable_hash

MARKER = ".growthpace-hub.json"


def needs_synthetic(spec: Spec) -> bool:
    return "synthetic" in spec.data.source_names or any(m.synthetic for m in spec.data.mixes)


def check_layout(root: Path, train_split: str, *, synthetic: bool, eval_splits=("valid", "test"), ood: bool) -> None:
    """Raise a DataError listing every file the spec needs that is missing under ``root``."""
    root = Path(root)
    missing = [
        str(curated_path(root, split, a).relative_to(root))
        for split in (train_split, *eval_splits)
        for a in ABILITIES
        if not curated_path(root, split, a).is_file()
    ]
    if synthetic:
        try:
            if not synthetic_path(root).is_file():
                missing.append(str(synthetic_path(root).relative_to(root)))
        except DataError as e:
            missing.append(f"synthetic/<N>/*.json ({e})")
    if ood:
        missing += [str(ood_path(root, s).relative_to(root)) for s in OOD_SUBJECTS if not ood_path(root, s).is_file()]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        hint = " (set evaluation.ood: false: the public dataset has no OOD exam sets)" if ood and any(
            m.startswith("ood/") for m in missing) else ""
        raise DataError(f"data.root: {root} lacks the study's layout: missing {shown}{hint}")


def _offline_error(spec: Spec, why: str) -> DataError:
    hub = spec.data.hub
    return DataError(
        f"data.hub: cannot fetch {hub.repo_id}@{hub.revision} to data.root ({spec.data_root}): {why}. "
        "This machine looks offline: copy the dataset there from a machine that has it (or run "
        "`growthpace fetch-data SPEC` where the Hub is reachable, or put the snapshot in the Hub cache, "
        "data.hub.cache_dir), set data.hub.endpoint to a reachable mirror, or set data.generate to "
        "use the embedded procedural dataset instead"
    )


def fetch(spec: Spec) -> Path:
    """Download the pinned snapshot to data.root if it is not there yet; return data.root."""
    hub = spec.data.hub
    root = spec.data_root
    if hub is None:
        raise DataError("data.hub: not set; nothing to fetch")
    if root.is_dir() and any(root.iterdir()):
        return root
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RevisionNotFoundError

    root.parent.mkdir(parents=True, exist_ok=True)
    partial = root.parent / f".{root.name}.hub-{stable_hash([hub.repo_id, hub.revision], 12)}"
    kwargs = dict(
        repo_type="dataset",
        revision=hub.revision,
        local_dir=partial,
        cache_dir=os.path.expanduser(hub.cache_dir) if hub.cache_dir else None,
        endpoint=hub.endpoint,
        local_files_only=bool(constants.HF_HUB_OFFLINE),
    )
    try:
        snapshot_download(hub.repo_id, **kwargs)
    except RevisionNotFoundError:
        raise DataError(f"data.hub.revision: {hub.revision!r} does not exist in {hub.repo_id}") from None
    except LocalEntryNotFoundError as e:
        why = "HF_HUB_OFFLINE is set and the Hub cache has no such snapshot" if constants.HF_HUB_OFFLINE else (
            str(e).splitlines()[0])
        raise _offline_error(spec, why) from None
    except (HfHubHTTPError, OSError) as e:
        raise _offline_error(spec, str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    shutil.rmtree(partial / ".cache", ignore_errors=True)  # huggingface_hub's resume metadata
    check_layout(partial, spec.data.train_split, synthetic=needs_synthetic(spec),
                 eval_splits=tuple(spec.evaluation.splits), ood=spec.evaluation.ood)
    write_json(partial / MARKER, {"repo_id": hub.repo_id, "revision": hub.revision})
    os.rename(partial, root)
    return root


# --- the declared dataset: `plan` without the data --------------------------------------------------


class _Sized:
    """Stands in for the synthetic records: only its length is asked for."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


class DeclaredPool:
    """A Pool with counts and no records (cells.expand needs `available` and len(synthetic))."""

    def __init__(self, available: dict[str, int], synthetic: int):
        self._available = dict(available)
        self.synthetic = _Sized(synthetic)
        self.curated: dict = {}

    @property
    def available(self) -> dict[str, int]:
        return dict(self._available)

    def labeled_counts(self, source: str) -> dict[str, int]:
        return self.available

    def unlabeled_size(self, source: str) -> int:
        return len(self.synthetic)

    def select(self, alloc, seed):  # pragma: no cover - guarded by callers
        raise DataError("data.root: the dataset is declared, not present; only `plan` can use it")


@dataclass
class DeclaredDataset:
    root: Path
    pool: DeclaredPool
    fingerprint: str
    tokens_per_item: dict[str, int]
    source: str
    corpus_digests: dict[str, str | None]
    declared: bool = True

    def train_records(self) -> list:
        return []

    def tokens(self, alloc, max_length: int) -> int:
        """Estimated training tokens of one pass over a cell's items (each item cut at max_length)."""
        t = self.tokens_per_item
        out = sum(n * min(t[a], max_length) for a, n in alloc.curated.items())
        return out + alloc.synthetic * min(t["synthetic"], max_length)


def declared_dataset(spec: Spec) -> DeclaredDataset:
    d = spec.data.declared
    if d is None:
        raise DataError(f"data.root: {spec.data_root} does not exist and data.declared is not set")
    available = d.train if spec.data.train_split == "full" else {a: min(1000, n) for a, n in d.train.items()}
    fingerprint = "declared-" + stable_hash(
        [available, d.synthetic, spec.data.hub.model_dump() if spec.data.hub else None], 16
    )
    return DeclaredDataset(spec.data_root, DeclaredPool(available, d.synthetic), fingerprint,
                           dict(d.tokens_per_item), d.source, corpus_digests(spec))
