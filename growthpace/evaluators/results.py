"""The result store: what a scored checkpoint leaves in storage, and under which key.

One checkpoint's result is three files under ``cells/<id>/`` (names and columns: platform/store/tables.py)::

    predictions/epoch_NNN.parquet   one row per item: prompt, reply, letter log-probs, candidate NLLs,
                                    parsed answer, verdict, random baseline
    scores/epoch_NNN.parquet        per (split, ability): score and baseline in percent, items
    scores/epoch_NNN.json           {"key", "backend"}, written last: its presence means both are whole

The key is (checkpoint content hash, eval set hash, scorer version), as a Marin executor step's
output is found by the hash of its inputs: a finished key is never recomputed, weights changed at the
same path get a new key, and a new scorer re-scores stored predictions (``rescore``) without a model.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from growthpace.evaluators.scoring import Prediction, REGISTRY, SCORER_VERSION, score
from growthpace.platform.core.items import question_kind
from growthpace.platform.core.cells import BASE_SOURCE, Cell
from growthpace.platform.store.checkpoints import check_checkpoint, checkpoint_hash, model_dir, model_hash, read_checkpoints
from growthpace.platform.core.items import Record
from growthpace.platform.store.storage import (Layout, StoredFileError, read_json, read_parquet, rebuild_hint, write_json, write_parquet)
from growthpace.platform.store.tables import (CELL_SCORES, CELL_SETTINGS, PREDICTIONS, RESULT_BACKEND, RESULT_KEY, SCORES,
                                              ResultKey)
from growthpace.platform.core.identity import stable_hash

EvalSets = dict[tuple[str, str], list[Record]]  # (split, ability) -> records
ROW_COLUMNS = PREDICTIONS.names


def eval_set_hash(sets: EvalSets, limits: dict[str, int]) -> str:
    items = [[s, a, [r.to_json() for r in recs]] for (s, a), recs in sorted(sets.items())]
    return stable_hash([items, sorted(limits.items())], 16)


def result_key(ck_hash: str, set_hash: str) -> ResultKey:
    """The key a checkpoint's result is stored under now: its weights, the eval sets, the current scorer."""
    return ResultKey(ck_hash, set_hash, SCORER_VERSION)


def stored_key(layout: Layout, cell_id: str, epoch: int) -> ResultKey | None:
    """The key of one epoch's stored result, None before it is scored (read_json checks it is a key)."""
    meta = layout.cell_result(cell_id, epoch)
    return ResultKey.parse(read_json(meta)[RESULT_KEY]) if meta.exists() else None


def flatten_sets(sets: EvalSets) -> tuple[list[tuple[str, str]], list[Record]]:
    """Every eval item in one list, with its (split, ability): the order predictions come back in."""
    keys, flat = [], []
    for key, records in sets.items():
        keys += [key] * len(records)
        flat += records
    return keys, flat


def prediction_rows(cell_id, epoch, key: ResultKey | str, backend: str, keys: list[tuple[str, str]], flat: list[Record],
                    preds) -> dict[str, list]:
    """One checkpoint's prediction rows (columns as lists, PREDICTIONS), scored; every pipeline builds them here.
    ``key``: the result key the rows are stored under (a benchmark, which stores nothing, passes "")."""
    out: dict[str, list] = {c: [] for c in ROW_COLUMNS}
    for (split, ability), r, p in zip(keys, flat, preds):
        v = score(r, p)
        row = {
            "cell_id": str(cell_id), "epoch": int(epoch), "key": str(key), "backend": backend,
            "split": split, "ability": ability, "idx": r.idx, "kind": question_kind(r),
            "prompt": r.prompt[-1][1], "text": p.text,
            "letter_logprobs": json.dumps(p.letter_logprobs) if p.letter_logprobs else None,
            "candidate_nll": list(p.candidate_nll) if p.candidate_nll else None,
            "parsed": v.parsed, "correct": bool(v.correct), "expected": float(v.expected),
        }
        for c, x in row.items():
            out[c].append(x)
    return out


def scores_from_predictions(preds: pl.DataFrame) -> pl.DataFrame:
    """Per (cell, epoch, split, ability): score and random baseline in percent, item count."""
    return (
        preds.group_by(["cell_id", "epoch", "split", "ability"], maintain_order=True)
        .agg(
            score=pl.col("correct").cast(pl.Float64).mean() * 100,
            expected=pl.col("expected").mean() * 100,
            items=pl.len().cast(pl.Int64),
        )
        .select(CELL_SCORES.names)
    )


def store(layout: Layout, cell_id: str, epoch: int, key: ResultKey, preds: pl.DataFrame) -> pl.DataFrame:
    """Predictions, then scores, then the key file last: a key on disk means both files are whole."""
    scores = scores_from_predictions(preds)
    write_parquet(layout.cell_predictions(cell_id, epoch), preds)
    write_parquet(layout.cell_scores(cell_id, epoch), scores)
    write_json(layout.cell_result(cell_id, epoch), {RESULT_KEY: str(key), RESULT_BACKEND: preds["backend"][0]})
    return scores


@dataclass(frozen=True)
class ToScore:
    """One checkpoint without a result under its current key: what scoring it needs, and the key its
    result is stored under."""

    cell_id: str
    epoch: int
    path: str
    key: ResultKey
    model: str | None = None  # the HF folder to load: the checkpoint's model/ unless set (an untuned base)

    @property
    def model_path(self) -> str:
        return self.model or str(model_dir(self.path))

    def row(self) -> dict:
        """As a Ray Data row (the key in its string form)."""
        return {"cell_id": self.cell_id, "epoch": self.epoch, "path": self.path, "model": self.model_path,
                "key": str(self.key)}


# An untuned base's result is stored like a checkpoint's, under cells/base-<base folder>/, epoch 0.
BASE_EPOCH = 0


@dataclass(frozen=True)
class UntunedBase:
    """The base model a size's cells start from, as a result-store unit: it has a cell id and the
    settings scores.parquet's rows carry (source "base", volume 0), so rescore takes it beside the
    cells and collect_scores writes its rows (into base_scores.parquet)."""

    model: str
    size: str
    seed: int
    path: str  # the HF folder (base/<key>/)

    @property
    def cell_id(self) -> str:
        return f"base-{str(self.path).rstrip('/').rsplit('/', 1)[-1]}"

    def params(self) -> dict:
        return {"model": self.model, "size": self.size, "source": BASE_SOURCE, "volume": 0, "mix": "",
                "seed": self.seed, "epochs": 0}


def pending_bases(bases: list[UntunedBase], layout: Layout, set_hash: str) -> Pending:
    """The untuned bases without a result under their current key (a base folder not written yet is
    left for a later pass); each is hashed once, so a rerun does not score it again."""
    out = Pending()
    for base in bases:
        digest = model_hash(base.path)
        if digest is None:
            continue
        key = result_key(digest, set_hash)
        if stored_key(layout, base.cell_id, BASE_EPOCH) == key:
            out.scored_before += 1
        else:
            out.todo.append(ToScore(base.cell_id, BASE_EPOCH, base.path, key, model=str(base.path)))
    return out


@dataclass
class Pending:
    """What ``pending`` found: the checkpoints to score, how many were scored before (a current result,
    or a final one whose weights retention removed), and the cells with a checkpoint list (nothing left
    to score once ``todo`` is stored)."""

    todo: list[ToScore] = field(default_factory=list)
    scored_before: int = 0
    trained: list[str] = field(default_factory=list)


def pending(cells: list[Cell], layout: Layout, set_hash: str) -> Pending:
    """Every trained cell's checkpoints, checked and hashed once: which lack a result under their current key."""
    out = Pending()
    for cell in cells:
        if not layout.cell_checkpoints(cell.cell_id).exists():
            continue
        out.trained.append(cell.cell_id)
        for ck in read_checkpoints(layout, cell.cell_id).checkpoints:
            have = stored_key(layout, cell.cell_id, ck.epoch)
            whole = check_checkpoint(ck.path, scored=have is not None)  # files gone before scoring: an error
            ck_hash = checkpoint_hash(ck.path) if whole else None
            if ck_hash is None:  # weights removed by retention after scoring: the stored result is final
                out.scored_before += 1
                continue
            key = result_key(ck_hash, set_hash)
            if have == key:
                out.scored_before += 1
            else:
                out.todo.append(ToScore(ck.cell_id, ck.epoch, ck.path, key))
    return out


def check_checkpoints(cells: list[Cell], layout: Layout) -> int:
    """Pre-flight of every trained cell's checkpoints (before anything is written); returns how many."""
    n = 0
    for cell in cells:
        if not layout.cell_checkpoints(cell.cell_id).exists():
            continue
        for ck in read_checkpoints(layout, cell.cell_id).checkpoints:
            check_checkpoint(ck.path, scored=stored_key(layout, cell.cell_id, ck.epoch) is not None)
            n += 1
    return n


@dataclass
class Rescored:
    """What ``rescore`` changed: files rewritten, and verdicts that flipped, per question kind."""

    files: int = 0
    verdicts: int = 0
    changed: Counter = field(default_factory=Counter)


def _stored_prediction(f, row: dict, by_key: dict) -> tuple[Record, Prediction]:
    """One stored prediction row and its eval record, or a StoredFileError naming the file and what to do."""
    record = by_key.get((row["split"], row["ability"], row["idx"]))
    if record is None:
        raise StoredFileError(f"{f}: item {row['split']}/{row['ability']}/{row['idx']} is not in the eval sets "
                              f"(they changed since it was scored); {rebuild_hint(f)}")
    try:
        letters = json.loads(row["letter_logprobs"]) if row["letter_logprobs"] else None
        if letters is not None and not (isinstance(letters, dict)
                                        and all(isinstance(v, (int, float)) for v in letters.values())):
            raise ValueError("expected {letter: log-prob}")
    except ValueError as e:
        raise StoredFileError(f"{f}: item {row['split']}/{row['ability']}/{row['idx']}: letter_logprobs is damaged "
                              f"({str(e).splitlines()[0][:120]}); {rebuild_hint(f)}") from None
    nll = tuple(row["candidate_nll"]) if row["candidate_nll"] is not None else None
    # An item put another way since it was predicted (a formulation that now ranks what it generated, or
    # more candidates) has no prediction to re-score: scoring it anyway would store "wrong" as current.
    def form(kind: str, n: int) -> str:
        return f"{kind} over {n} candidates" if REGISTRY[kind].needs == "rank" else kind

    now = question_kind(record)
    if row["kind"] not in REGISTRY or REGISTRY[row["kind"]].needs != REGISTRY[now].needs \
            or (REGISTRY[now].needs == "rank" and len(nll or ()) != len(record.choices or ())):
        was = form(row["kind"], len(nll or ())) if row["kind"] in REGISTRY else repr(row["kind"])
        raise StoredFileError(
            f"{f}: item {row['split']}/{row['ability']}/{row['idx']} was predicted as {was}, but the eval sets "
            f"now make it {form(now, len(record.choices or ()))}: it changed since it was scored; {rebuild_hint(f)}")
    return record, Prediction(text=row["text"] or "", letter_logprobs=letters, candidate_nll=nll)


def _stored_row_key(f, row: dict) -> ResultKey:
    """The result key a stored prediction row was scored under, or a StoredFileError naming the file."""
    try:
        return ResultKey.parse(row["key"])
    except ValueError as e:
        raise StoredFileError(f"{f}: column 'key' is not a result key ({e}); {rebuild_hint(f)}") from None


def rescore(cells: list[Cell | UntunedBase], layout: Layout, sets: EvalSets, limits: dict[str, int]) -> Rescored:
    """Re-apply the current scorers to stored predictions (no model is run).

    Every stored file is read and checked before the first is rewritten, so a damaged file deep in the
    study stops the command with the study's scores as they were, not half of them rescored.
    """
    by_key = {(s, a, r.idx): r for (s, a), recs in sets.items() for r in recs}
    set_hash = eval_set_hash(sets, limits)
    files = [f for cell in cells for f in layout.cell_prediction_files(cell.cell_id)]
    for f in files:
        rows = read_parquet(f).to_dicts()
        _stored_row_key(f, rows[0])
        for row in rows:
            _stored_prediction(f, row, by_key)
    out = Rescored()
    for cell in cells:
        for f in layout.cell_prediction_files(cell.cell_id):
            preds = read_parquet(f)
            rows = preds.to_dicts()
            for row in rows:
                record, p = _stored_prediction(f, row, by_key)
                v = score(record, p)
                kind = question_kind(record)
                if bool(v.correct) != bool(row["correct"]):
                    out.changed[kind] += 1
                out.verdicts += 1
                row.update(kind=kind, parsed=v.parsed, correct=bool(v.correct), expected=float(v.expected))
            key = result_key(_stored_row_key(f, rows[0]).checkpoint, set_hash)  # same weights, current sets and scorer
            new = pl.DataFrame(rows, schema=preds.schema).with_columns(key=pl.lit(str(key)))
            store(layout, cell.cell_id, int(rows[0]["epoch"]), key, new)
            out.files += 1
    return out


def cell_scores(layout: Layout, cell_id: str) -> pl.DataFrame:
    """Every stored epoch's scores of one cell (empty before any)."""
    files = layout.cell_score_files(cell_id)
    return pl.concat([read_parquet(f) for f in files]) if files else pl.DataFrame()


def collect_scores(cells: list[Cell | UntunedBase], layout: Layout) -> pl.DataFrame:
    """scores.parquet: one row per (cell, epoch, split, ability), with the cell's settings; the untuned
    bases among ``cells`` go to base_scores.parquet (returned: the cells' frame)."""
    bases = [c for c in cells if isinstance(c, UntunedBase)]
    if bases:
        _collect(bases, layout, layout.base_scores)
    return _collect([c for c in cells if not isinstance(c, UntunedBase)], layout, layout.scores)


def _collect(cells: list[Cell | UntunedBase], layout: Layout, path) -> pl.DataFrame:
    frames = []
    for cell in cells:
        part = cell_scores(layout, cell.cell_id)
        if part.is_empty():
            continue
        params = cell.params()
        frames.append(part.with_columns(**{k: pl.lit(params[k]) for k, _ in CELL_SETTINGS}))
    if not frames:
        return pl.DataFrame()
    out = pl.concat(frames, how="vertical_relaxed").sort(["cell_id", "epoch", "split", "ability"]).select(SCORES.names)
    write_parquet(path, out)
    return out
