"""The tables a study stores and the key its results are found by: each file's name and columns, once.

The writers (evaluators/results.py) build their rows from these columns, ``Layout`` (storage.py)
names the files from these names, and the read-back check (storage.py ``read_parquet`` /
``check_table``) refuses a file that lacks one of them, naming the file and the column::

    cells/<id>/predictions/epoch_NNN.parquet   PREDICTIONS: one row per eval item
    cells/<id>/scores/epoch_NNN.parquet        CELL_SCORES: one row per (split, ability)
    cells/<id>/scores/epoch_NNN.json           {RESULT_KEY: ResultKey, RESULT_BACKEND}, written last
    scores.parquet                             SCORES: every cell's scores with its settings
    base_scores.parquet                        BASE_SCORES: the untuned bases' (source "base", volume 0)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Column kinds the check tests (storage.py _check_parquet): "str" String (or all null), "int" an integer
# type, "num" a numeric type, "bool" Boolean (or all null), "nums" a list of numbers (or all null).
Column = tuple[str, str]


@dataclass(frozen=True)
class Table:
    """A stored table: its file name (``per_epoch``: the folder of a cell's ``epoch_NNN.parquet``
    files, one per checkpoint) and every column, in the order the writer writes them."""

    name: str
    columns: tuple[Column, ...]
    per_epoch: bool = False

    @property
    def names(self) -> list[str]:
        return [c for c, _ in self.columns]


EPOCH_FILE = re.compile(r"epoch_\d+")  # a per-epoch file's stem


def epoch_file(epoch: int, suffix: str) -> str:
    """``epoch_001.parquet``: one checkpoint's file in a per-epoch folder."""
    return f"epoch_{epoch:03d}{suffix}"


# What identifies an item's prediction, and the prediction itself (evaluators/results.py prediction_rows).
PREDICTION_COLUMNS: tuple[Column, ...] = (
    ("split", "str"), ("ability", "str"), ("idx", "str"), ("kind", "str"), ("prompt", "str"), ("text", "str"),
    ("letter_logprobs", "str"), ("candidate_nll", "nums"), ("parsed", "str"), ("correct", "bool"),
    ("expected", "num"),
)
PREDICTIONS = Table("predictions", (("cell_id", "str"), ("epoch", "int"), ("key", "str"), ("backend", "str"),
                                    *PREDICTION_COLUMNS), per_epoch=True)
# One checkpoint's scores: percent correct and the random baseline in percent, per (split, ability).
CELL_SCORES = Table("scores", (("cell_id", "str"), ("epoch", "int"), ("split", "str"), ("ability", "str"),
                               ("score", "num"), ("expected", "num"), ("items", "int")), per_epoch=True)
# The cell settings scores.parquet adds to every row (platform/core/cells.py Cell.params).
CELL_SETTINGS: tuple[Column, ...] = (("model", "str"), ("size", "str"), ("source", "str"), ("volume", "int"),
                                     ("mix", "str"), ("seed", "int"), ("epochs", "int"))
SCORES = Table("scores.parquet", (*CELL_SCORES.columns, *CELL_SETTINGS))
# The untuned bases' scores, as scores.parquet's rows (evaluators/results.py UntunedBase): apart from the
# cells', so every reader of scores.parquet sees the grid's cells only.
BASE_SCORES = Table("base_scores.parquet", SCORES.columns)
TABLES = (PREDICTIONS, CELL_SCORES, SCORES, BASE_SCORES)

# cells/<id>/scores/epoch_NNN.json, the result file: its key (a ResultKey) and the backend that predicted it.
RESULT_KEY, RESULT_BACKEND = "key", "backend"


def table_for(name: str, folder: str) -> Table | None:
    """The table a stored file named ``name`` in folder ``folder`` is, if the study writes it."""
    for table in TABLES:
        if table.per_epoch and folder == table.name and name.startswith("epoch_") and name.endswith(".parquet"):
            return table  # every file Layout lists (epoch_*.parquet)
        if not table.per_epoch and name == table.name:
            return table
    return None


@dataclass(frozen=True)
class ResultKey:
    """The key one checkpoint's stored result is found by: (checkpoint content hash, eval set hash,
    scorer version), as a Marin executor step's output is found by the hash of its inputs. A finished
    key is never recomputed; weights changed at the same path get a new key; a new scorer re-scores
    stored predictions. On disk: ``<checkpoint>-<eval_sets>-<scorer>`` (the scorer version may hold '-')."""

    checkpoint: str
    eval_sets: str
    scorer: str

    def __post_init__(self):
        for field, value in (("checkpoint", self.checkpoint), ("eval_sets", self.eval_sets)):
            if not value or "-" in value:
                raise ValueError(f"result key {field}: expected a hash without '-', got {value!r}")
        if not self.scorer:
            raise ValueError("result key scorer: expected a version, got ''")

    def __str__(self) -> str:
        return f"{self.checkpoint}-{self.eval_sets}-{self.scorer}"

    @classmethod
    def parse(cls, text: str) -> "ResultKey":
        """The key stored as ``text``; a ValueError when it is not one."""
        parts = text.split("-", 2) if isinstance(text, str) else []
        if len(parts) != 3:
            raise ValueError(f"expected <checkpoint hash>-<eval set hash>-<scorer version>, got {text!r}")
        return cls(*parts)
