"""Scoring through ray.data.llm's vLLM engine processor (evaluation.vllm_pipeline: processor).

The integration tests build two processors in all (engine start is 17-60 s on CPU): one checks
a ProcessorBackend against the in-process backends item by item and that its engine is gone when
it returns; one checks that evaluate(pipeline="processor") writes what the actor pipeline writes.
"""

import json
import shutil
import time

import polars as pl
import pytest
import yaml

from growthpace.evaluators.engines import resolve_pipeline
from growthpace.evaluators.llm_processor import reduce_output, request_rows
from growthpace.evaluators.requests import plan_requests
from growthpace.platform.core.spec import SpecError
from growthpace.platform.data.specfile import load_spec


# ---------------------------------------------------------------- fast unit tests


def test_resolve_pipeline():
    assert resolve_pipeline("auto", 1.0)[0] == "actor"  # warm engines on GPUs too
    assert resolve_pipeline("auto", 0.5)[0] == "actor"
    assert resolve_pipeline("auto", 0.0)[0] == "actor"
    assert resolve_pipeline("processor", 0.0) == ("processor", "asked for in the spec")
    assert resolve_pipeline("actor", 2.0) == ("actor", "asked for in the spec")
    pipeline, why = resolve_pipeline("processor", 1.0, backend="transformers")
    assert pipeline == "actor" and "transformers" in why
    assert resolve_pipeline("auto", 1.0, backend="vllm")[0] == "actor"
    assert resolve_pipeline("auto", 1.0, backend="vllm", remote_storage=True)[0] == "actor"
    with pytest.raises(ValueError, match="object store"):
        resolve_pipeline("processor", 1.0, backend="vllm", remote_storage=True)
    with pytest.raises(ValueError, match="evaluation.vllm_pipeline"):
        resolve_pipeline("ray", 0.0)


def test_spec_field(tmp_path):
    base = {"name": "t", "storage": str(tmp_path / "store"), "models": [{"name": "llama-nano", "size": "s"}],
            "data": {"root": str(tmp_path / "data")}}
    p = tmp_path / "spec.yaml"
    p.write_text(yaml.safe_dump(base))
    assert load_spec(p).evaluation.vllm_pipeline == "auto"
    p.write_text(yaml.safe_dump({**base, "evaluation": {"vllm_pipeline": "processor", "gpus_per_actor": 1}}))
    assert load_spec(p).evaluation.vllm_pipeline == "processor"
    p.write_text(yaml.safe_dump({**base, "evaluation": {"vllm_pipeline": "engine"}}))
    with pytest.raises(SpecError) as e:
        load_spec(p)
    assert "field 'evaluation.vllm_pipeline'" in str(e.value) and str(p) in str(e.value)


def test_requests_follow_predict(small_data):
    """One row per generation item, one per perplexity candidate; truncation as the backends do;
    a sampling_params schema without null ints (Ray Data turns those into floats)."""
    from growthpace.platform.core.items import option_letters, question_kind
    from growthpace.platform.data.chat import ChatEncoder
    from growthpace.platform.train.models import train_tokenizer
    from growthpace.platform.data.records import read_ood, read_split

    recs = [r for rs in read_split(small_data, "1000").values() for r in rs]
    enc = ChatEncoder(train_tokenizer(recs))
    items = [r for rs in read_split(small_data, "test").values() for r in rs]
    items += [r for rs in read_ood(small_data).values() for r in rs]
    plan = plan_requests(enc, items, {"math": 16}, max_length=64)
    rows = request_rows(plan)
    owner = [("gen", g.item) for g in plan.generations] + [("cand", c.item) for c in plan.continuations]
    ranked = [r for r in items if question_kind(r) == "perplexity"]
    assert ranked and len(rows) == len(items) - len(ranked) + sum(len(r.choices) for r in ranked)
    assert [r["row"] for r in rows] == list(range(len(rows)))
    keys = {tuple(sorted(r["sampling_params"])) for r in rows}
    assert len(keys) == 1
    for row, (what, i) in zip(rows, owner):
        sp = row["sampling_params"]
        assert isinstance(sp["prompt_logprobs"], int) and sp["temperature"] == 0.0
        assert sp["stop_token_ids"] == [enc.eot]
        if what == "cand":
            assert sp["max_tokens"] == 1 and sp["skip_reading_prefix_cache"] and row["start"] >= 1
            assert row["start"] <= max(1, 64 - (len(row["tokenized_prompt"]) - row["start"]))
        else:
            kind = question_kind(items[i])
            assert row["start"] == -1 and not sp["skip_reading_prefix_cache"]
            assert len(row["tokenized_prompt"]) <= 64 - sp["max_tokens"]
            letters = option_letters(items[i])
            assert sp["logprob_token_ids"] == ([enc.text(ch)[0] for ch in letters] if kind == "choice" else None)
            if kind == "math":
                assert sp["max_tokens"] <= 16


def test_reduce_output_reads_first_step_and_continuation():
    lp = lambda v: {"logprob": v, "rank": 1, "decoded_token": None}  # noqa: E731
    gen = {"row": 3, "generated_tokens": [7, 9], "watch": [5, 6], "start": -1, "prompt_token_ids": [1, 2],
           "logprobs": [{5: lp(-1.0), "6": lp(-2.0), 7: lp(-0.1)}, {9: lp(-0.2)}], "prompt_logprobs": [None, None]}
    assert reduce_output(gen) == {"row": 3, "tokens": [7, 9], "letters": [-1.0, -2.0], "nll": None}
    cand = {"row": 4, "generated_tokens": [2], "watch": [], "start": 2, "prompt_token_ids": [1, 2, 8, 9],
            "logprobs": None, "prompt_logprobs": [None, {2: lp(-5.0)}, {8: lp(-1.0)}, {9: lp(-3.0)}]}
    assert reduce_output(cand) == {"row": 4, "tokens": [2], "letters": None, "nll": 2.0}


# ---------------------------------------------------------------- against real engines


def _items(small_data):
    from growthpace.platform.data.records import read_ood, read_split

    items = [r for rs in read_split(small_data, "test").values() for r in rs]
    return items + [r for rs in read_ood(small_data).values() for r in rs]


def _cpu_back(ray, before: float, timeout: float = 30.0) -> float:
    deadline = time.time() + timeout
    while ray.available_resources().get("CPU", 0) < before and time.time() < deadline:
        time.sleep(0.5)
    return ray.available_resources().get("CPU", 0)


@pytest.mark.integration
def test_processor_matches_in_process_backends_and_frees_its_engine(ray_cluster, trained_dir, small_data):
    pytest.importorskip("vllm")
    from growthpace.evaluators.backends import predict
    from growthpace.evaluators.llm_processor import ProcessorBackend, engine_actors
    from growthpace.evaluators.scoring import score
    from growthpace.evaluators.transformers_backend import TransformersBackend
    from growthpace.evaluators.vllm_backend import VLLMBackend

    ray = ray_cluster
    items, limits = _items(small_data), {"math": 16}
    cpus = _cpu_back(ray, ray.cluster_resources()["CPU"])
    timings: dict = {}
    processor = ProcessorBackend(trained_dir, batch_size=16, max_length=512)
    pp = predict(processor, items, limits)
    timings.update(processor.timings)
    print(f"\nprocessor: {len(items)} items, {timings['total']:.1f}s in all, first row after {timings['first_row']:.1f}s")
    assert not engine_actors(), "the processor's vLLM engine actor is still alive"
    assert _cpu_back(ray, cpus) == cpus, "the engine's CPU bundle was not released"

    v = VLLMBackend(trained_dir, batch_size=16, max_length=512)
    t0 = time.time()
    pv = predict(v, items, limits)
    print(f"in-process vllm: predict {time.time() - t0:.2f}s")
    v.close()
    pt = predict(TransformersBackend(trained_dir, batch_size=16, max_length=512), items, limits)
    assert len(pp) == len(items)
    for other in (pv, pt):
        for r, a, b in zip(items, pp, other):
            assert a.text == b.text, r.key
            assert score(r, a) == score(r, b), r.key
            assert (a.letter_logprobs is None) == (b.letter_logprobs is None), r.key
            if a.letter_logprobs:
                assert set(a.letter_logprobs) == set(b.letter_logprobs)
                for k in a.letter_logprobs:
                    assert a.letter_logprobs[k] == pytest.approx(b.letter_logprobs[k], abs=1e-3), r.key
            assert (a.candidate_nll is None) == (b.candidate_nll is None), r.key
            if a.candidate_nll:
                assert a.candidate_nll == pytest.approx(b.candidate_nll, abs=1e-4), r.key
    assert any(p.letter_logprobs for p in pp) and any(p.candidate_nll for p in pp)


def _storage(folder, small_data, trained_dir):
    """A spec whose first cell has one epoch checkpoint (the trained tiny model): (cells, layout, sets)."""
    from growthpace.platform.core.cells import expand
    from growthpace.platform.data.dataset import load_dataset, load_eval_sets
    from growthpace.platform.store.storage import Layout, write_json

    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "spec.yaml"
    p.write_text(yaml.safe_dump({
        "name": "proc", "storage": str(folder / "store"), "models": [{"name": "llama-nano", "size": "s"}],
        "data": {"root": str(small_data), "train_split": "1000", "volumes": [10]},
        "evaluation": {"splits": ["valid", "test"], "ood": True, "backend": "vllm", "max_new_tokens": {"math": 16}},
    }))
    spec = load_spec(p)
    dataset = load_dataset(spec)
    cell = expand(spec, dataset.pool, dataset.fingerprint, dataset.corpus_digests)[0]
    layout = Layout.for_spec(spec)
    ck = layout.train / cell.cell_id / "checkpoint_000000"
    shutil.copytree(trained_dir, ck / "model")
    (ck / "epoch.json").write_text(json.dumps({"epoch": 1, "train_loss": 1.0}))
    write_json(layout.cell_checkpoints(cell.cell_id),
               {"cell_id": cell.cell_id, "checkpoints": [{"epoch": 1, "train_loss": 1.0, "path": str(ck)}]})
    return [cell], layout, load_eval_sets(spec), spec


@pytest.mark.integration
def test_evaluate_processor_pipeline_writes_what_the_actor_pipeline_writes(ray_cluster, trained_dir, small_data, tmp_path):
    pytest.importorskip("vllm")
    from growthpace.evaluators.llm_processor import engine_actors
    from growthpace.jobs.evaluate import evaluate

    results = {}
    for pipeline in ("actor", "processor"):
        cells, layout, sets, spec = _storage(tmp_path / pipeline, small_data, trained_dir)
        seen = []
        kw = dict(backend="vllm", batch_size=16, concurrency=1, limits=spec.evaluation.max_new_tokens)
        assert evaluate(cells, layout, sets, **kw, pipeline=pipeline, on_scored=lambda *a: seen.append(a)) == (1, 0)
        assert [(c, e) for c, e, _ in seen] == [(cells[0].cell_id, 1)]
        cid = cells[0].cell_id
        results[pipeline] = (pl.read_parquet(layout.cell_predictions(cid, 1)), pl.read_parquet(layout.cell_scores(cid, 1)),
                             json.loads(layout.cell_scores(cid, 1).with_suffix(".json").read_text()))
        if pipeline == "processor":  # scored once: the second call plans nothing and starts no engine
            assert evaluate(cells, layout, sets, **kw, pipeline=pipeline) == (0, 1)
            assert not engine_actors()
    (pa, sa, ka), (pp, sp, kp) = results["actor"], results["processor"]
    assert ka == kp  # same result key (checkpoint + eval sets + scorer version), backend vllm
    assert pa.schema == pp.schema and len(pa) == len(pp) > 0
    exact = [c for c in pa.columns if c not in ("letter_logprobs", "candidate_nll")]
    assert pa.select(exact).to_dicts() == pp.select(exact).to_dicts()
    for a, b in zip(pa.iter_rows(named=True), pp.iter_rows(named=True)):
        if a["letter_logprobs"] or b["letter_logprobs"]:
            la, lb = json.loads(a["letter_logprobs"]), json.loads(b["letter_logprobs"])
            assert la.keys() == lb.keys() and all(abs(la[k] - lb[k]) < 1e-3 for k in la)
        if a["candidate_nll"] is not None or b["candidate_nll"] is not None:
            assert a["candidate_nll"] == pytest.approx(b["candidate_nll"], abs=1e-4)
    assert sa.to_dicts() == sp.to_dicts()
