"""A spec file read and checked: YAML with line numbers, the schema (core/spec.py), then the checks that
need more than one field or the disk (paths, models, names that must exist). Every error names file and field."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import yaml
from pydantic import ValidationError

from growthpace.platform.core.spec import Spec, SpecError
from growthpace.platform.core.presets import PRESETS


def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _DuplicateKey(Exception):
    def __init__(self, key, line: int, first: int):
        self.key, self.line, self.first = key, line, first


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently, so a
    second `models:` would drop the first list) and reports an integer too long to convert at its line."""

    def construct_mapping(self, node, deep=False):
        first: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in first:
                    raise _DuplicateKey(key, key_node.start_mark.line + 1, first[key])
                first[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: SafeLoader's own error says so, with its line
                break
        return super().construct_mapping(node, deep)

    def construct_yaml_int(self, node):
        try:
            return super().construct_yaml_int(node)
        except ValueError as e:  # Python refuses int() of more than 4300 digits
            raise yaml.constructor.ConstructorError(None, None, f"not a usable integer ({e})", node.start_mark) from None


_SpecLoader.add_constructor("tag:yaml.org,2002:int", _SpecLoader.construct_yaml_int)

MAX_DEPTH = 64


def _too_deep(text: str) -> int | None:
    """The line where the YAML nests deeper than MAX_DEPTH (found from parser events, which do not recurse)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                return event.start_mark.line + 1
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    return None


def load_spec(path: str | Path) -> Spec:
    """Parse and validate a spec; relative paths in it are taken from the current directory."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such spec file")
    try:
        text = path.read_text(encoding="utf-8")
        deep = _too_deep(text)
        if deep is not None:
            raise SpecError(f"{path}:{deep}: nested more than {MAX_DEPTH} levels deep; a spec is a few levels of mappings")
        raw = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SpecError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except _DuplicateKey as e:
        raise SpecError(f"{path}:{e.line}: duplicate key {e.key!r} (first at line {e.first}); "
                        "YAML would keep only the last one: merge them or delete one") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not valid UTF-8") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a YAML mapping")
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: field '{_field_path(err['loc'])}': {msg}" if err["loc"] else f"{path}: {msg}")
        raise SpecError("\n".join(lines)) from None
    problems = [*_references(spec), *_paths(spec), *_models(spec)]
    if problems:
        raise SpecError("\n".join(f"{path}: field '{field}': {why}" for field, why in problems))
    return spec


# ---------------------------------------------------------------- checks across fields and on disk


def _grid_sources(spec: Spec) -> list[str]:
    return [*spec.data.source_names, *(["mix"] if spec.data.mixes else [])]


def _volumes(spec: Spec, source: str) -> list[int]:
    return list(spec.data.source(source).volumes)


def _declaration(spec: Spec) -> list[tuple[str, str]]:
    """The abilities and sources the rest of the spec names must be declared ones (or DoIT's)."""
    from growthpace.platform.core.abilities import SOURCES

    out = []
    names = spec.ability_names
    for where, caps in [("data.caps", spec.data.caps),
                        *((f"data.mixes[{i}].caps", m.caps) for i, m in enumerate(spec.data.mixes))]:
        for ability in caps:
            if ability not in names:
                out.append((where, f"unknown ability {ability!r} in caps; expected one of {', '.join(names)}"))
    d = spec.data
    if d.layout == "messages":
        if not spec.declared:
            out.append(("data.layout", "'messages' needs the study's abilities declared (top-level `abilities:`)"))
        for field in ("valid", "test"):
            if field in spec.evaluation.splits and getattr(d, field) is None:
                out.append((f"data.{field}", f"layout 'messages' scores the {field} split: name its file or folder"))
        for i, s in enumerate(d.sources):
            if isinstance(s, str) or s.train is None:
                out.append((f"data.sources[{i}]", "layout 'messages': each source names its file or folder "
                                                  "({name: ..., train: PATH})"))
    else:
        for i, src in enumerate(d.sources):
            if not isinstance(src, str) and src.train is not None:
                out.append((f"data.sources[{i}].train", "the doit layout reads its own folders; a source's own file "
                                                        "needs data.layout: messages"))
        for i, n in enumerate(d.source_names):
            if n not in SOURCES:
                out.append((f"data.sources[{i}]", f"the doit layout has the sources {', '.join(SOURCES)}; got {n!r} "
                                                  "(named sources with their own files: data.layout: messages)"))
    if spec.ood and not spec.declared:
        out.append(("ood", "out-of-domain sets are declared with the study's abilities (top-level `abilities:`); "
                           "the DoIT preset scores its own three subjects"))
    lower = {a.lower(): a for a in names}
    for i, o in enumerate(spec.ood):
        twin = lower.get(o.name.lower()) or next((p.name for p in spec.ood[:i] if p.name.lower() == o.name.lower()), None)
        if twin is not None:
            out.append((f"ood[{i}].name", f"{o.name!r} and {twin!r} name one set (abilities and OOD sets share tables, "
                                          "metric names and file names, case-insensitively)"))
    for i, pair in enumerate(d.compare or []):
        bad = [p for p in pair if p not in d.source_names]
        if bad or pair[0] == pair[1]:
            out.append((f"data.compare[{i}]", f"{list(pair)}: a pair of two of data.sources {d.source_names}"))
    return out


def _references(spec: Spec) -> list[tuple[str, str]]:
    """Settings that name something (a volume, a question kind, a size, a source) must name something
    that exists: otherwise they are silently ignored and the study is not the one the spec describes."""
    from growthpace.platform.core.items import KINDS

    out = _declaration(spec)
    volumes = sorted({v for s in spec.data.source_names for v in _volumes(spec, s)})
    for v in spec.training.epochs_by_volume:
        if v not in volumes:
            out.append((f"training.epochs_by_volume.{v}", f"volume {v} is not one of the grid's volumes {volumes}"))
    for kind in spec.evaluation.max_new_tokens:
        if kind not in KINDS:
            close = difflib.get_close_matches(kind, KINDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append((f"evaluation.max_new_tokens.{kind}", f"not a question kind{hint}; expected one of {', '.join(KINDS)}"))
    if spec.data.synthetic_volumes is not None and "synthetic" not in spec.data.source_names:
        out.append(("data.synthetic_volumes", f"no cell would use them: data.sources {spec.data.source_names} has no "
                                              "'synthetic' (a mix adds synthetic items with data.mixes[].synthetic)"))
    sizes = [m.size for m in spec.models]
    for size in spec.evaluation.resources.by_size:
        if size not in sizes:
            out.append((f"evaluation.resources.by_size.{size}", f"{size!r} is not one of the models' sizes {sizes}"))
    if spec.analysis.recommend_size is not None and spec.analysis.recommend_size not in sizes:
        out.append(("analysis.recommend_size", f"{spec.analysis.recommend_size!r} is not one of the models' sizes {sizes}"))
    grid = _grid_sources(spec)
    first: dict[str, int] = {}
    for i, m in enumerate(spec.models):
        if m.name in first:
            j = first[m.name]
            out.append((f"models[{i}].name", f"model {m.name!r} is already listed as size {spec.models[j].size!r} "
                                             f"(models[{j}]): one model has one size"))
        first.setdefault(m.name, i)
        for s in m.sources or []:
            if s not in grid:
                why = "data.mixes is empty" if s == "mix" else f"data.sources is {spec.data.source_names}"
                out.append((f"models[{i}].sources", f"source {s!r} matches no cell of the grid ({why})"))
    n = 0
    for m in spec.models:
        for s in grid:
            if m.sources is None or s in m.sources:
                n += len(spec.data.mixes) if s == "mix" else len(_volumes(spec, s))
    if not n and not out:
        out.append(("data", f"the grid has zero cells (sources {spec.data.source_names}, volumes {spec.data.volumes}, "
                            f"{len(spec.data.mixes)} mixes, models' sources {[m.sources for m in spec.models]})"))
    return out


# MLflow's tracking URI schemes (a plain path is a local file store).
TRACKING_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")


def unknown_home(value: str) -> str | None:
    """Why ``~user/...`` names no folder: this machine has no such user (Path.expanduser would raise a
    RuntimeError wherever the path is first used)."""
    try:
        Path(value).expanduser()
    except RuntimeError:
        user = value[1:].split("/", 1)[0]
        return f"{value}: this machine has no user {user!r}, so '~{user}' is no home folder"
    return None


def local_path_problem(value: str, *, folder: bool) -> str | None:
    """Why a local path cannot be used: ``~user`` of an unknown user, a symlink loop, a regular file where
    a folder must be, or an ancestor that is a regular file (nothing can be created under it)."""
    home = unknown_home(value)
    if home:
        return home
    p = Path(value).expanduser()
    try:
        p = p.resolve()
    except (RuntimeError, OSError) as e:  # Python 3.11: RuntimeError("Symlink loop from ...")
        return f"{value}: cannot be resolved ({e})"
    for anc in (p, *p.parents):
        try:
            if not anc.exists():
                if anc.is_symlink():
                    return f"{value}: {anc} is a symlink to nothing (dangling, or a loop)"
                continue
        except OSError as e:
            return f"{value}: {anc}: {e.strerror or e}"
        if anc.is_dir():
            return None
        if anc == p:
            return f"{value}: is a file, not a folder" if folder else None
        return f"{value}: {anc} is a regular file, so nothing can be created under it"
    return None


def _paths(spec: Spec) -> list[tuple[str, str]]:
    out = []
    if "://" not in spec.storage:
        why = local_path_problem(spec.storage, folder=True)
        if why:
            out.append(("storage", why))
    why = local_path_problem(spec.data.root, folder=True)
    if why:
        out.append(("data.root", why))
    uri = spec.tracking.uri
    if uri is not None:
        scheme, sep, rest = uri.partition("://")
        if sep and scheme.split("+")[0].lower() not in TRACKING_SCHEMES:
            out.append(("tracking.uri", f"unknown scheme {scheme!r} in {uri!r}; MLflow takes "
                                        f"{', '.join(s + '://' for s in TRACKING_SCHEMES[:6])}..., or a local folder"))
        elif scheme == "sqlite" and rest.startswith("/"):
            why = local_path_problem(str(Path(rest[1:]).parent), folder=True)  # sqlite:///rel, sqlite:////abs
            if why:
                out.append(("tracking.uri", why))
        elif not sep and uri.lower() not in TRACKING_SCHEMES:
            why = local_path_problem(uri, folder=True)
            if why:
                out.append(("tracking.uri", why))
    return out


HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
BARE_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # legacy ids without an owner (gpt2)
MISSPELT = 0.75  # difflib ratio to a preset above which a bare name is a typo of it, not a Hub id


def _models(spec: Spec) -> list[tuple[str, str]]:
    """Each model name is a preset, an existing folder or a Hub id (owner/name). Decided without the
    network, so a misspelt preset fails at once (with the closest preset) instead of after the Hub's
    retries; a Hub id is fetched later only when the Hub may be asked (HF_HUB_OFFLINE unset) or is cached.
    A model with declared `params` may be absent here (`plan` does not load it); the writing commands
    check it again (models.check_model in jobs/study.py check_inputs)."""
    out = []
    for i, m in enumerate(spec.models):
        name, fld = m.name, f"models[{i}].name"
        if name in PRESETS:
            continue
        home = unknown_home(name)
        if home:
            out.append((fld, f"model {home}"))
            continue
        folder = Path(name).expanduser()
        if folder.exists():
            if not folder.is_dir():
                out.append((fld, f"model {name!r} is a file; a model is a preset or a folder with config.json, "
                                 "weights and a tokenizer"))
            continue
        closest = difflib.get_close_matches(name, list(PRESETS), n=1, cutoff=0.0)
        hint = f"did you mean {closest[0]!r}? presets: {', '.join(PRESETS)}"
        if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1:
            if not m.params:  # declared params: `plan` needs no model (doit.yaml plans away from its cluster)
                out.append((fld, f"model {name!r}: no such folder (and not a preset: {', '.join(PRESETS)})"))
        elif not (HUB_ID.match(name) or BARE_HUB_ID.match(name)):
            out.append((fld, f"model {name!r} is not a preset, an existing folder or a Hub id (owner/name); {hint}"))
        elif "/" not in name and difflib.get_close_matches(name, list(PRESETS), n=1, cutoff=MISSPELT):
            out.append((fld, f"model {name!r} is not a preset nor an existing folder; {hint}"))
        elif not m.params and _offline() and not _hub_cached(name):
            out.append((fld, f"model {name!r}: not a preset nor a folder, and HF_HUB_OFFLINE is set so the Hub "
                             f"is not asked (and it is not in the local cache); presets: {', '.join(PRESETS)}"))
    return out


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
