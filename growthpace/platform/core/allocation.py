"""Which training items each cell gets.

Every pool is put in a fixed order per seed (a hash of seed and item id), and a cell takes the first
``n`` items of each ability in that order. So for one seed the items of volume 40 contain those of
volume 10: a growth curve measures volume, not resampling noise.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

from growthpace.platform.core.abilities import ABILITIES
from growthpace.platform.core.items import Record


class AllocationError(ValueError):
    """An allocation that cannot be met: names the field and the numbers."""


@dataclass(frozen=True)
class Allocation:
    """A cell's data request: counts per ability from a labeled source plus items of an unlabeled pool
    (DoIT: its curated source and its synthetic pool)."""

    curated: dict[str, int]
    synthetic: int = 0
    source: str = "curated"  # the labeled source the per-ability counts are drawn from
    pool: str = "synthetic"  # the unlabeled source the other items are drawn from

    @property
    def total(self) -> int:
        return sum(self.curated.values()) + self.synthetic


def even_counts(total: int, available: dict[str, int], caps: dict[str, int] | None = None) -> dict[str, int]:
    """Spread ``total`` evenly over abilities, capped ones fixed at their cap.

    Water-filling: an ability with fewer items than its fair share gives all it has and the rest is
    spread over the others. The remainder goes to abilities in the study's order (``available``'s),
    so counts only grow with the total (which nesting needs).
    """
    caps = caps or {}
    counts = {a: min(n, available.get(a, 0)) for a, n in caps.items()}
    remaining = total - sum(counts.values())
    if remaining < 0:
        raise AllocationError(f"caps sum to {sum(counts.values())}, more than the total {total}")
    free = [a for a in available if a not in caps]
    while free:
        share, extra = divmod(remaining, len(free))
        short = [a for a in free if available[a] < share or (available[a] == share and extra)]
        if not short:
            break
        for a in short:
            counts[a] = available[a]
            remaining -= available[a]
            free.remove(a)
    if free:
        share, extra = divmod(remaining, len(free))
        for i, a in enumerate(free):
            counts[a] = share + (1 if i < extra else 0)
    elif remaining > 0:
        raise AllocationError(f"total {total} is more than the {sum(available.values())} items that exist")
    return {a: counts[a] for a in available if a in counts}


def max_counts(available: dict[str, int], caps: dict[str, int]) -> dict[str, int]:
    """Capped abilities at their cap, every other ability's full data (the study's 'maximum')."""
    return {a: min(caps.get(a, n), n) for a, n in available.items()}


def _order_key(seed: int, ability: str, idx: str) -> str:
    return hashlib.sha256(f"{seed}\x00{ability}\x00{idx}".encode()).hexdigest()


class Pool:
    """The training items of one dataset, ordered per seed for nested selection."""

    def __init__(self, curated: dict[str, list[Record]], synthetic: list[Record] | None, *,
                 labeled: dict[str, dict[str, list[Record]]] | None = None,
                 unlabeled: dict[str, list[Record]] | None = None):
        """``curated`` / ``synthetic``: DoIT's two sources; ``labeled`` / ``unlabeled``: named sources (ability
        -> items, and whole pools), of which the first of each is also ``curated`` / ``synthetic``."""
        self.labeled = labeled if labeled is not None else {"curated": curated}
        self.unlabeled = unlabeled if unlabeled is not None else {"synthetic": synthetic or []}
        self.curated = curated
        self.synthetic = synthetic or []
        self._orders: dict[tuple[int, int, bool], tuple[list[int], list[int] | None]] = {}

    @property
    def available(self) -> dict[str, int]:
        return {a: len(v) for a, v in self.curated.items()}

    def labeled_counts(self, source: str) -> dict[str, int]:
        return {a: len(v) for a, v in self.labeled[source].items()}

    def unlabeled_size(self, source: str) -> int:
        return len(self.unlabeled[source])

    def _ordered(self, records: list[Record], seed: int, by_ability: bool) -> tuple[list[int], list[int] | None]:
        """The seed's order of ``records`` (one of this pool's lists), computed once: ``plan`` selects
        from the same list for every cell, and hashing a 40,960-item pool per cell dominated it."""
        key = (id(records), seed, by_ability)
        if key not in self._orders:
            self._orders[key] = self._order(records, seed, by_ability)
        return self._orders[key]

    @staticmethod
    def _order(records: list[Record], seed: int, by_ability: bool) -> tuple[list[int], list[int] | None]:
        """(positions in ``records`` in key order, each one's rank within its type there; None when the
        list is one group, so ranks are places in that order). Equal keys (one idx under two types of a
        synthetic pool) keep the file's order."""
        keys = [_order_key(seed, r.type if by_ability else "synthetic", r.idx) for r in records]
        order = sorted(range(len(records)), key=keys.__getitem__)
        if not by_ability or len({r.type for r in records}) <= 1:
            return order, None
        seen: Counter[str] = Counter()
        ranks = []
        for pos in order:
            ranks.append(seen[records[pos].type])
            seen[records[pos].type] += 1
        return order, ranks

    def _first(self, records: list[Record], n: int, seed: int, by_ability: bool) -> list[Record]:
        """The first n of each type (by_ability), or of all, in the seed's order."""
        order, ranks = self._ordered(records, seed, by_ability)
        if ranks is None:
            return [records[pos] for pos in order[:n]]
        return [records[pos] for pos, rank in zip(order, ranks) if rank < n]

    def select(self, alloc: Allocation, seed: int) -> list[Record]:
        """The first n items of each ability in the seed's order; then the synthetic items."""
        out: list[Record] = []
        labeled = self.labeled.get(alloc.source, self.curated) if alloc.curated else {}
        for ability, n in alloc.curated.items():
            records = labeled[ability]
            if n > len(records):
                raise AllocationError(f"ability {ability!r}: asked for {n} items, {len(records)} exist")
            if n == 0:
                continue
            out.extend(self._first(records, n, seed, by_ability=True))
        if alloc.synthetic:
            pool = self.unlabeled.get(alloc.pool, self.synthetic)
            if alloc.synthetic > len(pool):
                raise AllocationError(
                    f"{alloc.pool}: asked for {alloc.synthetic} items, {len(pool)} exist"
                )
            out.extend(self._first(pool, alloc.synthetic, seed, by_ability=False))
        return out


def card(records: list[Record], abilities: tuple[str, ...] = ABILITIES) -> dict:
    """What a cell trained on: counts per ability and a content hash of the items."""
    by_ability = Counter(r.type for r in records)
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.type}\x00{r.idx}\x00{r.messages!r}\n".encode())
    return {
        "total": len(records),
        "counts": {a: by_ability.get(a, 0) for a in abilities},
        "content_sha256": h.hexdigest(),
    }
