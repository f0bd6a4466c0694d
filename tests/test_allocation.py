"""Allocation: even spread, caps, water-filling, mixes, nested subsets, cards."""

import pytest

from growthpace.platform.core.abilities import ABILITIES
from growthpace.platform.core.allocation import Allocation, AllocationError, Pool, card, even_counts, max_counts
from growthpace.platform.core.items import Record


def _rec(ability: str, i: int) -> Record:
    return Record(ability, str(i), (("user", f"q{i}"), ("assistant", "A")), 0)


def _pool(n: dict[str, int], synthetic: int = 0) -> Pool:
    curated = {a: [_rec(a, i) for i in range(n.get(a, 50))] for a in ABILITIES}
    synth = [_rec(ABILITIES[i % 10], 10_000 + i) for i in range(synthetic)]
    return Pool(curated, synth)


def test_even_spread_and_remainder_in_study_order():
    avail = {a: 100 for a in ABILITIES}
    assert even_counts(40, avail) == {a: 4 for a in ABILITIES}
    c = even_counts(13, avail)
    assert sum(c.values()) == 13
    assert [c[a] for a in ABILITIES] == [2, 2, 2, 1, 1, 1, 1, 1, 1, 1]


def test_caps_with_even_rest_reconstruct_like():
    avail = {a: 2000 for a in ABILITIES}
    caps = {"ethics": 64, "role_play": 64, "creative_writing": 1000}
    c = even_counts(10000, avail, caps)
    assert sum(c.values()) == 10000
    assert c["ethics"] == 64 and c["role_play"] == 64 and c["creative_writing"] == 1000
    rest = [c[a] for a in ABILITIES if a not in caps]
    assert max(rest) - min(rest) <= 1


def test_water_filling_when_an_ability_is_short():
    avail = {a: 100 for a in ABILITIES}
    avail["math"] = 3
    c = even_counts(500, avail)
    assert c["math"] == 3 and sum(c.values()) == 500
    assert all(c[a] in (55, 56) for a in ABILITIES if a != "math")


def test_over_demand_and_over_caps_raise():
    avail = {a: 5 for a in ABILITIES}
    with pytest.raises(AllocationError, match="more than the 50 items"):
        even_counts(51, avail)
    with pytest.raises(AllocationError, match="caps sum"):
        even_counts(10, avail, {"ethics": 5, "math": 5, "code": 5})


def test_max_counts():
    avail = {a: 300 for a in ABILITIES}
    c = max_counts(avail, {"ethics": 64})
    assert c["ethics"] == 64 and c["math"] == 300


def test_nested_subsets_per_seed_and_different_across_seeds():
    pool = _pool({}, synthetic=200)
    avail = pool.available
    sets = [{r.key for r in pool.select(Allocation(even_counts(v, avail)), seed=0)} for v in (10, 40, 160, 400)]
    for small, big in zip(sets, sets[1:]):
        assert small < big
    s1 = {r.key for r in pool.select(Allocation(even_counts(160, avail)), seed=1)}
    assert s1 != sets[2]
    syn = [{r.idx for r in pool.select(Allocation({}, synthetic=v), seed=0)} for v in (10, 40, 160)]
    assert syn[0] < syn[1] < syn[2] and len(syn[2]) == 160


def test_select_is_deterministic_and_counts_match():
    pool = _pool({})
    alloc = Allocation(even_counts(40, pool.available))
    a = pool.select(alloc, seed=3)
    b = pool.select(alloc, seed=3)
    assert [r.key for r in a] == [r.key for r in b]
    info = card(a)
    assert info["total"] == 40 and all(info["counts"][x] == 4 for x in ABILITIES)
    assert info["content_sha256"] == card(b)["content_sha256"]
    assert info["content_sha256"] != card(pool.select(alloc, seed=4))["content_sha256"]


def test_select_too_many_raises():
    pool = _pool({"code": 2})
    with pytest.raises(AllocationError, match="'code': asked for 3"):
        pool.select(Allocation({"code": 3}), seed=0)
    with pytest.raises(AllocationError, match="synthetic"):
        pool.select(Allocation({}, synthetic=1), seed=0)
