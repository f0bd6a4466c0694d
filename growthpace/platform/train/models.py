"""Base models and tokenizers: presets built from config, or a real HF path, both with chat tokens.

Presets are Llama-architecture models with head_dim 32 (the smallest the CPU vLLM attention takes).
Their tokenizer is a byte-level BPE that the project trains itself on the dataset's training text, so
nothing is downloaded. A preset's base weights are seeded: every cell of a size starts from the same
weights, as every cell of the study started from the same pre-trained model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from itertools import chain
from pathlib import Path

from growthpace.platform.core.abilities import ASSISTANT, CHAT_TOKENS, EOT, PAD, USER
from growthpace.platform.core.items import Record
from growthpace.platform.core.presets import MAX_POSITIONS, PRESETS, VOCAB_SIZE, Preset
from growthpace.platform.store.storage import Layout, StoragePath, is_remote, localize, upload_tree
from growthpace.platform.core.identity import stable_hash

class ModelError(ValueError):
    pass


def _corpus(records: list[Record]) -> list[str]:
    return [content for r in records for _, content in r.messages]


def train_bpe(records: list[Record]):
    """A byte-level BPE over the training text, with the study's chat tokens as special tokens: a
    ``tokenizers.Tokenizer``, which needs neither transformers nor torch (``plan`` counts with it).

    The trainer learns from word counts alone, and splitting the text (ByteLevel's pattern, then its
    byte mapping) was two thirds of training. So each distinct text is split once here
    (chat.byte_level_pieces) and the trainer is fed each distinct word's byte-level form as often as it
    occurs, split at spaces, which no byte-level form holds: the same counts, the same tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from growthpace.platform.data.chat import byte_level_pieces

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    texts = Counter(_corpus(records))
    by_occurrences: dict[int, list[list[str]]] = {}
    for text, pieces in zip(texts, byte_level_pieces(list(texts), byte_level)):
        by_occurrences.setdefault(texts[text], []).append(pieces)
    words: Counter[str] = Counter()
    for n, pieces in by_occurrences.items():
        for word, k in Counter(chain.from_iterable(pieces)).items():
            for form, _ in byte_level.pre_tokenize_str(word):
                words[form] += n * k
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(CHAT_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([(form + " ") * n for form, n in words.items()], trainer=trainer)
    tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(records: list[Record]):
    """``train_bpe`` as the transformers tokenizer that training saves with every preset base model."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(records),
        pad_token=PAD,
        eos_token=EOT,
        bos_token=None,
        additional_special_tokens=[USER, ASSISTANT],
    )


def vocab_size(tokenizer) -> int:
    """Token count of a tokenizer, chat tokens included: a ``tokenizers.Tokenizer`` or a transformers one."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return tokenizer.get_vocab_size(with_added_tokens=True)
    return len(tokenizer)


def preset_config(preset: Preset, vocab_size: int) -> dict:
    """A preset as the fields of its LlamaConfig (config.json's names): the one definition of a preset model."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=preset.hidden,
        intermediate_size=preset.intermediate,
        num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads,
        num_key_value_heads=preset.heads,
        head_dim=preset.hidden // preset.heads,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
    )


def llama_config(preset: Preset, vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(**preset_config(preset, vocab_size))


def llama_params(config: dict) -> int:
    """Parameters of a Llama-architecture model from its config.json fields, by arithmetic (no torch):
    embeddings, per layer the attention projections, the gated MLP and two RMSNorms, the final norm,
    and an output head unless tied. Biases as the config declares them (attention_bias, mlp_bias)."""
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or h // heads
    attn_bias, mlp_bias = bool(config.get("attention_bias")), bool(config.get("mlp_bias"))
    q, kv = heads * head_dim, kv_heads * head_dim
    attention = h * (q + 2 * kv) + q * h + (q + 2 * kv + h if attn_bias else 0)
    mlp = 3 * h * inter + (2 * inter + h if mlp_bias else 0)
    embed = config["vocab_size"] * h
    head = 0 if config.get("tie_word_embeddings", False) else embed  # LlamaConfig's default
    return embed + layers * (attention + mlp + 2 * h) + h + head


def count_params(config) -> int:
    from transformers import AutoModelForCausalLM

    import torch  # imported where used: the CLI's error path (ModelError) stays light

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def _add_chat_tokens(tokenizer):
    """The study's recipe for a real checkpoint: add the chat tokens (extend_vocab grows the embeddings)."""
    from growthpace.platform.data.chat import missing_study_tokens

    missing = missing_study_tokens(tokenizer, CHAT_TOKENS)
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD
    tokenizer.eos_token = EOT
    return tokenizer


def _keep_template(tokenizer):
    """``chat: template``: the tokenizer as it is, no token added; batches pad with its eos when it has no
    pad token (labels, not the pad id, say what is trained)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def chat_tokenizer(tokenizer, chat: str):
    """A source model's tokenizer as its base model keeps it, for ``chat`` (spec models[].chat), checked
    to frame as asked (chat.framing_for is what every later reader decides by): raises ChatFormatError."""
    from growthpace.platform.data.chat import ChatFormatError, TemplateFraming, framing_for, missing_study_tokens

    if chat == "study":
        return _add_chat_tokens(tokenizer)
    if not missing_study_tokens(tokenizer):
        raise ChatFormatError("its tokenizer already has the study's chat tokens, so its checkpoints would be read "
                              "as chat: study; use chat: study")
    tok = _keep_template(tokenizer)
    if not isinstance(framing_for(tok), TemplateFraming):  # framing_for raises when it has no template
        raise ChatFormatError("its tokenizer would not be framed by its chat template")
    return tok


def source_tokenizer(name: str, chat: str):
    """A model's tokenizer as its base model will keep it (``chat_tokenizer``), from the source's tokenizer
    files alone: a Hub model's weights are not fetched for it."""
    from transformers import AutoTokenizer

    folder = Path(name).expanduser()
    return chat_tokenizer(AutoTokenizer.from_pretrained(folder if folder.is_dir() else name), chat)


def check_chat(name: str, chat: str, field: str) -> None:
    """Fail before anything is written when ``chat: template`` cannot frame the model's conversations:
    a tokenizer without a chat template, or one that cannot mark the assistant's span. Names the field
    and the file the template comes from."""
    if chat == "study":
        return
    from growthpace.platform.data.chat import ChatFormatError

    folder = Path(name).expanduser()
    try:
        source_tokenizer(name, chat)
    except OSError as e:
        raise ModelError(f"field '{field}': model {name!r}: cannot load its tokenizer: {e}") from None
    except ChatFormatError as e:
        where = next((folder / f for f in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")
                      if (folder / f).is_file()), folder)
        raise ModelError(f"field '{field}': model {name!r} ({where}): {e}") from None


def model_key(name: str, tokenizer_key: str, seed: int, chat: str = "study") -> str:
    if name in PRESETS:
        return f"{name}-{stable_hash([PRESETS[name].__dict__, tokenizer_key, seed], 8)}"
    key = f"hf-{stable_hash([str(Path(name).resolve()) if Path(name).exists() else name], 8)}"
    return key if chat == "study" else f"{key}-{chat}"  # a study's bases keep their folders


def _meta_count(name: str) -> int:
    """The parameter count of an HF model of any architecture: built on the meta device from its config."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:  # ValueError: a config.json without a known model_type
        raise ModelError(f"model {name!r}: not a preset ({', '.join(PRESETS)}) nor a loadable path: {e}") from None
    return count_params(config)


def param_count(name: str, tokenizer=None) -> int:
    """The one parameter count of a model (plan and report), no weights built. A preset's is arithmetic
    on its config (torch and transformers stay unimported: ``plan`` is instant); so is a local folder's
    whose config.json is a Llama's; any other HF model is built on the meta device from its config.
    A preset's vocabulary is its tokenizer's; before one is trained, VOCAB_SIZE, the size the BPE is
    trained to (chat tokens included)."""
    if name in PRESETS:
        vocab = vocab_size(tokenizer) if tokenizer is not None else VOCAB_SIZE
        return llama_params(preset_config(PRESETS[name], vocab))
    config = _local_config(name)
    if config is not None and config.get("model_type") in _LLAMA_TYPES and all(k in config for k in _LLAMA_KEYS):
        return llama_params(config)
    return _meta_count(name)


# model_type values whose modeling code has exactly llama_params' layout (transformers' LlamaForCausalLM)
_LLAMA_TYPES = ("llama",)
_LLAMA_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def _local_config(name: str) -> dict | None:
    import json

    path = Path(name).expanduser() / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # _meta_count's AutoConfig then names what is wrong with it
    return config if isinstance(config, dict) else None


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def check_model(name: str, field: str = "model") -> None:
    """Fail before anything is written when a model cannot be loaded: a preset name is fine; an HF path
    needs a config that parses and, for a local folder, weights and a tokenizer. Names the spec field."""
    if name in PRESETS:
        return
    folder = Path(name).expanduser()
    if name.startswith(("/", "./", "../", "~")) and not folder.exists():
        raise ModelError(f"field '{field}': model {name!r}: no such folder (and not a preset: {', '.join(PRESETS)})")
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise ModelError(f"field '{field}': model {name!r}: not a preset ({', '.join(PRESETS)}) nor a loadable path: {e}") from None
    if folder.is_dir():
        if not any(f.is_file() for pat in ("*.safetensors", "*.bin") for f in folder.glob(pat)):
            raise ModelError(f"field '{field}': model {name!r}: {folder} has no weights (*.safetensors or *.bin)")
        if not any((folder / f).is_file() for f in _TOKENIZER_FILES):
            raise ModelError(f"field '{field}': model {name!r}: {folder} has no tokenizer ({', '.join(_TOKENIZER_FILES)})")
        if (folder / "tokenizer.model").is_file() and not any(
                (folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            # transformers 5.19 then builds a generic tokenizer from tokenizer.model whose ids differ from
            # the model's own SentencePiece ids: it loads, and every cell would train on wrong tokens
            raise ModelError(f"field '{field}': model {name!r}: {folder} has tokenizer.model but no tokenizer_config.json "
                             "naming its class (e.g. {\"tokenizer_class\": \"LlamaTokenizer\"}); add it")


def tokenizer_key(data_fingerprint: str) -> str:
    return f"bpe{VOCAB_SIZE}-{data_fingerprint[:10]}"


def read_or_train_bpe(layout: Layout, records: list[Record], data_fingerprint: str):
    """The preset tokenizer as a bare ``tokenizers.Tokenizer``, writing nothing: the one ensure_tokenizer
    stored for this dataset when there is one (training the BPE is most of a DoIT-scale plan), else
    trained here, as ensure_tokenizer would train it."""
    from tokenizers import Tokenizer

    from growthpace.platform.store.storage import StoredFileError

    stored = layout.tokenizer(tokenizer_key(data_fingerprint)) / "tokenizer.json"
    if not stored.exists():
        return train_bpe(records)
    try:
        return Tokenizer.from_str(stored.read_text(encoding="utf-8"))
    except Exception as e:  # tokenizers raises its own types; training would fail on the same file
        raise StoredFileError(f"{stored}: damaged ({str(e)[:200] or type(e).__name__}); delete {stored.parent} "
                              "and the next `growthpace run` trains and stores it again") from None


def ensure_tokenizer(layout: Layout, records: list[Record], data_fingerprint: str):
    """Train (once per dataset) and store the preset tokenizer; return (tokenizer, key)."""
    from transformers import AutoTokenizer

    key = tokenizer_key(data_fingerprint)
    path = layout.tokenizer(key)
    if not (path / "tokenizer.json").exists():
        tok = train_tokenizer(records)
        _save_atomic(path, lambda d: tok.save_pretrained(d))
    return AutoTokenizer.from_pretrained(localize(path)), key


def ensure_base_model(layout: Layout, name: str, tokenizer, tokenizer_key: str, seed: int,
                      chat: str = "study") -> StoragePath:
    """Materialise a base model with its tokenizer under base/<key>; reused by every cell.

    An HF model is never loaded whole: its safetensors shards are copied with the vocabulary grown
    (extend_vocab) for ``chat: study``, linked unchanged for ``chat: template`` (no token added, so
    vLLM loads the folder as the source is); old .bin weights are converted to safetensors first, shard
    by shard, in their dtype."""
    from transformers import AutoTokenizer

    from growthpace.platform.data.chat import ChatFormatError

    key = model_key(name, tokenizer_key, seed, chat)
    path = layout.base_model(key)
    if (path / "config.json").exists():
        return path
    if name in PRESETS:
        import torch
        from transformers import AutoModelForCausalLM

        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(llama_config(PRESETS[name], vocab_size(tokenizer)))

        def save(d: Path) -> None:
            model.save_pretrained(d)
            tokenizer.save_pretrained(d)

        _save_atomic(path, save)
        return path
    try:
        src = _model_folder(name)
        tok = chat_tokenizer(AutoTokenizer.from_pretrained(src), chat)
    except OSError as e:
        raise ModelError(f"model {name!r}: cannot load: {e}") from None
    except ChatFormatError as e:  # check_chat refused it before anything was written, unless the folder changed
        raise ModelError(f"model {name!r}, chat: {chat}: {e}") from None

    def save_hf(d: Path) -> None:
        if any(src.glob("*.safetensors")):
            extend_vocab(src, d, len(tok))
        else:
            converted = d / ".safetensors-from-bin"
            bin_to_safetensors(src, converted)
            extend_vocab(converted, d, len(tok))  # links unchanged shards, so removing `converted` keeps them
            shutil.rmtree(converted)
        tok.save_pretrained(d)

    _save_atomic(path, save_hf)
    return path


def bin_to_safetensors(src: Path, dst: Path) -> None:
    """Write ``src``'s PyTorch .bin weights to ``dst`` as safetensors, one shard at a time, each tensor in
    its own dtype (a 16-bit 33b stays 16-bit and is never whole in RAM: shards are memory-mapped).
    Config files are copied; tensors that share storage in a .bin (tied embeddings) are written apart."""
    import json

    import torch
    from safetensors.torch import save_file

    index_path = src / "pytorch_model.bin.index.json"
    if index_path.is_file():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        shards = sorted(set(index["weight_map"].values()))
    else:
        index, shards = None, [p.name for p in sorted(src.glob("*.bin"))]
        if len(shards) != 1:
            raise ModelError(f"{src}: {len(shards)} .bin files and no pytorch_model.bin.index.json")
    dst.mkdir(parents=True, exist_ok=True)
    renamed = {}
    for i, shard in enumerate(shards):
        out = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" if index else "model.safetensors"
        renamed[shard] = out
        try:
            state = torch.load(src / shard, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError:  # the pre-1.6 (non-zip) format cannot be memory-mapped: read this shard whole
            state = torch.load(src / shard, map_location="cpu", weights_only=True)
        seen: set[int] = set()
        tensors = {}
        for k, t in state.items():
            ptr = t.untyped_storage().data_ptr()
            tensors[k] = t.clone() if ptr in seen else t.contiguous()  # safetensors refuses shared storage
            seen.add(ptr)
        save_file(tensors, str(dst / out), metadata={"format": "pt"})
        del state, tensors
    if index:
        weight_map = {k: renamed[v] for k, v in index["weight_map"].items()}
        (dst / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": index.get("metadata", {}), "weight_map": weight_map}, indent=2), encoding="utf-8")
    for extra in src.iterdir():
        if extra.is_file() and extra.suffix == ".json" and extra.name != index_path.name:
            shutil.copyfile(extra, dst / extra.name)


def _model_folder(name: str) -> Path:
    """A local folder with the model's files: the path itself, else the Hub snapshot (cached)."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.model", "*.txt"]))


# The source model's tokenizer files: the project writes its own (chat tokens, eos <eot>) and never copies these.
_SOURCE_TOKENIZER_FILES = frozenset(_TOKENIZER_FILES) | {"special_tokens_map.json", "added_tokens.json",
                                                         "chat_template.json", "merges.txt"}
_VOCAB_TENSORS = ("embed_tokens.weight", "lm_head.weight", "embed_out.weight", "wte.weight")


def extend_vocab(src: Path, dst: Path, vocab: int) -> None:
    """Copy a safetensors checkpoint from ``src`` to ``dst`` with its vocabulary grown to ``vocab`` rows.

    The study adds chat tokens to a 7b-33b base model. Loading the model to resize it would need its
    whole size in RAM on the driver (132 GB for 33b in fp32); here only the shards holding the input and
    output embeddings are read, one at a time, and every other shard is linked or copied unchanged,
    in its own dtype. New rows are the mean of the existing ones (deterministic, and a new token starts
    where an average token is).
    """
    import json

    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    old = int(config.get("vocab_size") or 0)
    index_path = src / "model.safetensors.index.json"
    index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.is_file() else None
    shards = sorted(set(index["weight_map"].values())) if index else ["model.safetensors"]
    dst.mkdir(parents=True, exist_ok=True)
    added = 0
    for shard in shards:
        with safe_open(str(src / shard), framework="pt") as f:
            grow = [k for k in f.keys() if k.endswith(_VOCAB_TENSORS) and f.get_slice(k).get_shape()[0] == old]
            if vocab > old and grow:
                tensors = {k: f.get_tensor(k) for k in f.keys()}
                meta = f.metadata() or {"format": "pt"}
        if not (vocab > old and grow):
            try:
                os.link(src / shard, dst / shard)  # same filesystem: no copy of tens of GB
            except OSError:
                shutil.copyfile(src / shard, dst / shard)
            continue
        for k in grow:
            t = tensors[k]
            mean = t.float().mean(dim=0, keepdim=True).to(t.dtype)
            tensors[k] = torch.cat([t, mean.expand(vocab - old, -1)], dim=0).contiguous()
            added += (vocab - old) * t.shape[1] * t.element_size()
        save_file(tensors, str(dst / shard), metadata=meta)
        del tensors
    for extra in src.iterdir():  # configs, generation settings; the tokenizer is saved by the caller
        if extra.name in _SOURCE_TOKENIZER_FILES:
            continue  # a source's special_tokens_map.json would make the reloaded eos </s>, not the study's <eot>
        if extra.is_file() and extra.suffix == ".json" and not (dst / extra.name).exists():
            shutil.copyfile(extra, dst / extra.name)
    if index:
        index.setdefault("metadata", {})["total_size"] = int(index.get("metadata", {}).get("total_size", 0)) + added
        (dst / index_path.name).write_text(json.dumps(index, indent=2), encoding="utf-8")
    config["vocab_size"] = max(old, vocab)
    (dst / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def _save_atomic(path: StoragePath, save) -> None:
    if is_remote(path):  # saved locally, then uploaded with the files the existence checks read last
        with tempfile.TemporaryDirectory() as tmp:
            save(Path(tmp))
            upload_tree(Path(tmp), path, last=("config.json", "tokenizer.json"))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        save(tmp)
        try:
            tmp.rename(path)
        except OSError:  # another process won the race: theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
