"""Pre-training of the bases (models[].pretrain): its key, its one-epoch step rule, its validation, and
one run through the real Ray Tune + Ray Train + DeepSpeed path."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from growthpace.platform.data.corpus import corpus_problem, documents
from growthpace.platform.train import pretrain
from growthpace.platform.core.batching import steps_per_epoch
from growthpace.platform.core.spec import SpecError
from growthpace.platform.data.specfile import load_spec
from growthpace.platform.store.storage import Layout

ROOT = Path(__file__).resolve().parent.parent
CORPUS = "world/test-corpus.txt"


def _corpus_text(root: Path, n: int = 200) -> str:
    """Plain-text documents from the training records: a corpus the tests may change."""
    from growthpace.platform.data.records import read_split

    recs = [r for rs in read_split(root, "1000").values() for r in rs]
    return "\n".join(" ".join(c for _, c in r.messages).replace("\n", " ") for r in recs[:n]) + "\n"


@pytest.fixture
def data_root(small_data, tmp_path) -> Path:
    """A copy of the session's dataset with a corpus file (the shared one stays untouched)."""
    root = tmp_path / "data"
    shutil.copytree(small_data, root)
    (root / CORPUS).parent.mkdir(parents=True, exist_ok=True)
    (root / CORPUS).write_text(_corpus_text(root), encoding="utf-8")
    return root


def _spec_file(tmp_path: Path, root: Path, pretrain_block: dict | None, **model) -> Path:
    m = {"name": "llama-nano", "size": "nano", "resources": {"cpus_per_worker": 0.5, "driver_cpus": 0.25}, **model}
    if pretrain_block is not None:
        m["pretrain"] = pretrain_block
    raw = {
        "name": "pt",
        "storage": str(tmp_path / "store"),
        "models": [m],
        "data": {"root": str(root), "train_split": "1000", "sources": ["curated"], "volumes": [8]},
        "training": {"epochs": 1, "lr": 3e-3, "end_lr": 3e-4, "per_device_batch": 4, "max_length": 64},
        "evaluation": {"warmup_epochs": 0},
    }
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


SETTINGS = {"steps": 10, "lr": 1e-3, "end_lr": 1e-4, "batch": 4, "block": 32, "seed": 0, "workers": 1,
            "betas": (0.9, 0.95), "weight_decay": 0.1, "precision": "fp32", "zero_stage": 2,
            "gradient_checkpointing": False}


def test_key_is_the_same_for_the_same_inputs_and_changes_with_each():
    key = pretrain.pretrained_key("llama-nano-abc", "c" * 64, SETTINGS, "bpe-1")
    assert key == pretrain.pretrained_key("llama-nano-abc", "c" * 64, dict(reversed(SETTINGS.items())), "bpe-1")
    assert key.startswith("llama-nano-abc-pt")
    changed = [
        pretrain.pretrained_key("llama-nano-abd", "c" * 64, SETTINGS, "bpe-1"),
        pretrain.pretrained_key("llama-nano-abc", "d" * 64, SETTINGS, "bpe-1"),
        pretrain.pretrained_key("llama-nano-abc", "c" * 64, {**SETTINGS, "steps": 11}, "bpe-1"),
        pretrain.pretrained_key("llama-nano-abc", "c" * 64, {**SETTINGS, "lr": 2e-3}, "bpe-1"),
        pretrain.pretrained_key("llama-nano-abc", "c" * 64, {**SETTINGS, "precision": "bf16"}, "bpe-1"),
        pretrain.pretrained_key("llama-nano-abc", "c" * 64, SETTINGS, "bpe-2"),
    ]
    assert len({key, *changed}) == len(changed) + 1


@pytest.mark.parametrize("n_sequences", [3, 40, 41, 200])
def test_one_epoch_is_exactly_the_steps_at_the_global_batch(n_sequences):
    sequences = [[i] * 8 for i in range(n_sequences)]
    examples = pretrain.epoch_examples(sequences, steps=10, batch=4)
    assert len(examples) == 40 and steps_per_epoch(len(examples), 4) == 10
    assert all(ids == labels for ids, labels in examples)
    assert [ids[0] for ids, _ in examples] == [i % n_sequences for i in range(40)]  # cycled, or cut


def test_blocks_join_documents_with_eot_and_drop_the_partial_tail():
    assert pretrain.blocks([[1, 2], [3], [4, 5]], 9, 3) == [[1, 2, 9], [3, 9, 4]]  # 5, 9 left over
    with pytest.raises(ValueError, match="fewer tokens than one block"):
        pretrain.epoch_examples(pretrain.blocks([[1]], 9, 3), 2, 2)


def test_train_settings_are_one_epoch_of_the_global_batch():
    t = pretrain.train_settings({**SETTINGS, "batch": 8, "workers": 2})
    assert (t["per_device_batch"], t["grad_accum"], t["epochs"], t["packing"]) == (4, 1, 1, False)


def test_cell_ids_follow_the_pretraining(tmp_path, data_root):
    from growthpace.platform.core.cells import expand
    from growthpace.platform.data.dataset import load_dataset

    def ids(block):
        spec = load_spec(_spec_file(tmp_path, data_root, block))
        ds = load_dataset(spec)
        return [c.cell_id for c in expand(spec, ds.pool, ds.fingerprint, ds.corpus_digests)]

    base = {"corpus": CORPUS, "steps": 5}
    without, with_pt = ids(None), ids(base)
    assert without != with_pt
    assert ids(base) == with_pt  # identical inputs, identical cells
    assert ids({**base, "steps": 6}) != with_pt
    assert ids({**base, "block": 64}) != with_pt
    with open(data_root / CORPUS, "a", encoding="utf-8") as f:
        f.write("one more document\n")
    assert ids(base) != with_pt


def test_pretrain_workers_default_to_the_models_and_decide_its_trial_and_key(tmp_path, data_root):
    from types import SimpleNamespace

    from growthpace.jobs.pretrain import base_jobs

    def job(block):
        spec = load_spec(_spec_file(tmp_path, data_root, block))
        study = SimpleNamespace(spec=spec, layout=Layout.for_spec(spec), tokenizer_key="tok")
        return base_jobs(study, {"llama-nano": str(tmp_path / "base" / "llama-nano-raw")})[0]

    own, two = job({"corpus": CORPUS, "steps": 5, "batch": 4}), job({"corpus": CORPUS, "steps": 5, "batch": 4, "workers": 2})
    assert own.settings["workers"] == own.resources["workers"] == 1
    assert two.settings["workers"] == two.resources["workers"] == 2 and two.resources["cpus_per_worker"] == 0.5
    assert own.key != two.key
    assert pretrain.train_settings(two.settings)["per_device_batch"] == 2


@pytest.mark.parametrize("block, model, match", [
    ({"steps": 0}, {}, "pretrain.steps"),
    ({"steps": True}, {}, "pretrain.steps"),
    ({"corpus": "/etc/passwd", "steps": 3}, {}, "relative to data.root"),
    ({"corpus": "../x.txt", "steps": 3}, {}, "relative to data.root"),
    ({"steps": 3, "epochs": 2}, {}, "pretrain.epochs"),
    ({"steps": 3, "batch": 3}, {"resources": {"workers": 2}}, "not a multiple of its workers 2"),
    ({"steps": 3, "batch": 4, "workers": 3}, {}, "not a multiple of its workers 3"),
    ({"steps": 3, "workers": 0}, {}, "pretrain.workers"),
])
def test_bad_pretrain_blocks_name_their_field(tmp_path, data_root, block, model, match):
    with pytest.raises(SpecError, match=match):
        load_spec(_spec_file(tmp_path, data_root, block, **model))


def test_missing_corpus_fails_up_front_naming_field_and_path(tmp_path, data_root):
    from growthpace.jobs.study import prepare

    path = _spec_file(tmp_path, data_root, {"steps": 3})  # the default corpus, world/world.txt, is absent here
    (data_root / "world" / "world.txt").unlink(missing_ok=True)
    with pytest.raises(SpecError, match=r"models\[0\]\.pretrain\.corpus.*world/world\.txt: no such file"):
        prepare(load_spec(path), write=True)
    assert not (tmp_path / "store").exists()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "growthpace.cli", "plan", str(path)], capture_output=True, text=True,
                         env=env, timeout=300, cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "models[0].pretrain.corpus" in out.stderr and "world.txt" in out.stderr
    assert not (tmp_path / "store").exists()


def test_plan_lists_each_pretraining(tmp_path, data_root):
    from growthpace.jobs.pretrain import plan_rows
    from growthpace.jobs.study import prepare

    spec = load_spec(_spec_file(tmp_path, data_root, {"corpus": CORPUS, "steps": 7, "batch": 4, "block": 32}))
    (row,) = plan_rows(prepare(spec, write=False))
    assert (row["size"], row["steps"], row["tokens"]) == ("nano", 7, 7 * 4 * 32)
    from growthpace.jobs.study import model_params

    assert row["flops"] == 6 * model_params(prepare(spec, write=False))["llama-nano"] * 7 * 4 * 32
    assert row["corpus_tokens"] > 1000
    assert not (tmp_path / "store").exists()


@pytest.mark.integration
def test_pretrain_through_ray_train_once_and_cells_train_from_it(ray_cluster, tmp_path, data_root):
    from growthpace.jobs.cluster import connect
    from growthpace.jobs.pretrain import pretrain_bases
    from growthpace.jobs.study import materialise, model_tokenizers, prepare
    from growthpace.jobs.sweep import train_config
    from growthpace.platform.store.storage import Layout, read_json

    # the default corpus: the generated world (world/world.txt)
    spec = load_spec(_spec_file(tmp_path, data_root, {"steps": 12, "lr": 3e-3, "end_lr": 1e-3, "batch": 4, "block": 64}))
    study = prepare(spec, write=True)
    raw = materialise(study)
    connect(spec)
    bases, trained = pretrain_bases(study, raw, model_tokenizers(study, raw))
    (job,) = trained
    base = Path(bases["llama-nano"])
    assert base == Path(job.path) and base.parent == Path(raw["llama-nano"]).parent and base != Path(raw["llama-nano"])
    info = read_json(base / pretrain.PRETRAIN_INFO)
    assert info["steps"] == 12 and info["tokens"] == 12 * 4 * 64
    assert info["last_loss"] < info["first_loss"] - 0.5, info
    assert (base / "model.safetensors").is_file() and (base / "tokenizer.json").is_file()

    layout = Layout.for_spec(spec)
    tune_runs = sorted(p.name for p in layout.tune.iterdir())
    mtime = (base / "model.safetensors").stat().st_mtime_ns
    again, trained_again = pretrain_bases(study, raw, model_tokenizers(study, raw))
    assert trained_again == [] and again == bases
    assert sorted(p.name for p in layout.tune.iterdir()) == tune_runs  # no new Tune experiment
    assert (base / "model.safetensors").stat().st_mtime_ns == mtime
    for cell in study.cells:
        assert train_config(cell, bases[cell.model], layout, spec.tracking_uri, None)["base_model"] == str(base)


def test_plan_with_a_pretraining_imports_neither_torch_nor_transformers(tmp_path, data_root):
    import json

    from tests.test_plan_fast import LOADED

    path = _spec_file(tmp_path, data_root, {"corpus": CORPUS, "steps": 7})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", LOADED, "plan", str(path), "--json"], capture_output=True, text=True,
                         env=env, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["pretrain"][0]["steps"] == 7
    loaded = set(json.loads(out.stderr.split("LOADED=")[-1].splitlines()[0]))
    assert "growthpace" in loaded and not loaded & {"torch", "transformers"}


def test_a_corpus_that_is_not_utf8_is_named_with_its_line(tmp_path):
    bad = tmp_path / "c.txt"
    bad.write_bytes(b"fine\nalso fine\n\xff broken\n")
    assert corpus_problem(bad) == f"{bad}:3: not valid UTF-8"
    bad.write_text("\n  \n")
    assert "empty" in corpus_problem(bad)
    bad.write_text("a document\n")
    assert corpus_problem(bad) is None


def test_tokens_are_the_corpus_once_tokenized_into_the_epoch(tmp_path, data_root):
    from growthpace.jobs.pretrain import base_jobs, write_tokens
    from growthpace.jobs.study import prepare
    from growthpace.platform.data.chat import ChatEncoder
    from growthpace.platform.data.dataset import read_cell_tokens
    from growthpace.platform.store.storage import Layout

    spec = load_spec(_spec_file(tmp_path, data_root, {"corpus": CORPUS, "steps": 5, "batch": 4, "block": 16}))
    study = prepare(spec, write=False)
    raw = {"llama-nano": Layout(tmp_path / "store").base_model("llama-nano-raw")}
    (job,) = base_jobs(study, raw)
    examples = read_cell_tokens(write_tokens(Layout(tmp_path / "store"), job, study.tokenizer))
    assert len(examples) == 20 and all(len(ids) == 16 and ids == labels for ids, labels in examples)
    enc = ChatEncoder(study.tokenizer)
    first = documents(data_root / CORPUS)[0]
    stream = [t for ids, _ in examples for t in ids]
    assert stream[: len(enc.text(first)) + 1] == [*enc.text(first), enc.eot]  # documents joined by <eot>
