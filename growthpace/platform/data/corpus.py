"""A model's pre-training corpus on disk: where it is, its bytes' digest (part of the cell id), its documents."""

from __future__ import annotations

from pathlib import Path

from growthpace.platform.store.storage import file_sha256


def corpus_path(data_root: Path, pretrain) -> Path:
    return data_root / pretrain.corpus


def corpus_digest(path: Path) -> str | None:
    """The corpus file's sha256, None while it is missing (check_inputs names it before any write)."""
    return file_sha256(path) if path.is_file() else None


def documents(path: Path) -> list[str]:
    """The corpus's documents: one per non-blank line."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def corpus_problem(path: Path) -> str | None:
    """Why a corpus file cannot be read as UTF-8 text with at least one document; None when it can."""
    if not path.is_file():
        return f"{path}: no such file"
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return f"{path}:{line}: not valid UTF-8"
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    if not text.strip():
        return f"{path}: empty (no document)"
    return None


def corpus_digests(spec) -> dict[str, str | None]:
    """Each pre-trained model size's corpus digest, which its cells' ids hold (core/cells.py expand)."""
    return {m.size: corpus_digest(corpus_path(spec.data_root, m.pretrain)) for m in spec.models if m.pretrain is not None}
