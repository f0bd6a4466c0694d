"""The shipped tasks' data loader (`custom_dataset: !function data.load`): JSONL files named relative to
this folder. A `data_files` path in a task YAML resolves against the working directory instead, so a
task folder that moves with its data names its files this way."""

from pathlib import Path

import datasets

HERE = Path(__file__).parent


def load(files: dict, **_metadata) -> datasets.DatasetDict:
    return datasets.load_dataset("json", data_files={split: str(HERE / name) for split, name in files.items()})
