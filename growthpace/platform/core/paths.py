"""Names and addresses, as rules: a safe file name, an object store URI parsed. No I/O here: store/storage.py
opens what these name."""

from __future__ import annotations

import re


SAFE_NAME = r"^[A-Za-z0-9_.-]+$"


class PathError(ValueError):
    """A name (from a spec, the command line or a stored file) that would make a path outside its folder."""


def safe_name(name: str, what: str) -> str:
    """``name`` if it is one plain path component (letters, digits, '_', '.', '-'; not '.' or '..')."""
    if not isinstance(name, str) or not re.fullmatch(SAFE_NAME, name) or name in (".", ".."):
        raise PathError(f"{what}: {name!r} is not a safe name (letters, digits, '_', '.', '-'; not '.' or '..')")
    return name


OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs")


def object_store_uri(uri: str) -> tuple[str, str]:
    """(scheme, bucket/key with no empty parts) of an object store URI; PathError naming what is wrong."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in OBJECT_STORE_SCHEMES or not rest.strip("/"):
        raise PathError(f"{uri!r}: not an object store URI ({', '.join(s + '://bucket/...' for s in OBJECT_STORE_SCHEMES)})")
    key = "/".join(part for part in rest.split("/") if part)
    if any(part in (".", "..") for part in key.split("/")):
        raise PathError(f"{uri!r}: '.' and '..' are not allowed in a storage URI")
    return scheme, key
