"""The study's chat framing, shared by training and scoring so both see the same tokens.

    <user> text <eot> <assistant> text <eot> ...

Loss is taken only on assistant text and its <eot>.
"""

from __future__ import annotations

import re
from itertools import accumulate

from growthpace.platform.core.abilities import ASSISTANT, EOT, PAD, USER

IGNORE = -100

# ByteLevel's pre-tokenizer split, GPT-2's pattern 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
# ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ in Python's re, which has no \p{..}: on ASCII \p{L} is [A-Za-z], \p{N}
# [0-9] and Oniguruma's \s [\t\n\v\f\r ] (not Python's \s, which adds \x1c-\x1f); each other character
# a text holds joins the class the tokenizer's own split puts it in (_piece_pattern). BPE encodes each
# piece alone, so a text's token count is the sum of its pieces' counts (ChatEncoder._counts).
_PATTERN = (r"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+")
_ASCII_CLASSES = {"L": "A-Za-z", "N": "0-9", "S": "\\t\\n\\x0b\\x0c\\r "}


def byte_level_pieces(texts: list[str], byte_level) -> list[list[str]]:
    """Each text's pieces as ``byte_level`` (a ``pre_tokenizers.ByteLevel`` splitting by its pattern, no
    prefix space) splits it, before its byte mapping."""
    findall = _piece_pattern(set().union(*[t for t in texts if not t.isascii()]), byte_level).findall
    return [findall(t) for t in texts]


def _piece_pattern(chars: set[str], byte_level) -> re.Pattern:
    """_PATTERN with each non-ASCII character of ``chars`` in its class: a letter when ``byte_level``
    keeps "a" + c one piece, a number when "0" + c, other when "!" + c, else whitespace. Asked of the
    tokenizer, not of Python's Unicode tables, whose version may differ from Oniguruma's."""
    split = byte_level.pre_tokenize_str
    classes = dict(_ASCII_CLASSES)
    for c in sorted(chars):
        if not c.isascii():
            kind = next((k for k, probe in (("L", "a"), ("N", "0"), ("O", "!")) if len(split(probe + c)) == 1), "S")
            if kind != "O":  # "other" is the complement of the three classes
                classes[kind] += re.escape(c)
    return re.compile(_PATTERN.format(**classes))


class ChatEncoder:
    """Takes a transformers tokenizer, or a bare ``tokenizers.Tokenizer`` (what ``plan`` trains: it
    counts tokens without importing transformers); both give the same ids for the same trained BPE."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        from tokenizers import Tokenizer  # the Rust library alone: no transformers import

        self._bare = isinstance(tokenizer, Tokenizer)
        if self._bare:
            self.user, self.assistant, self.eot, self.pad = map(tokenizer.token_to_id, (USER, ASSISTANT, EOT, PAD))
        else:
            self.user, self.assistant, self.eot = tokenizer.convert_tokens_to_ids([USER, ASSISTANT, EOT])
            self.pad = tokenizer.pad_token_id

    def text(self, s: str) -> list[int]:
        return self.texts([s])[0]

    def texts(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens added: one batched call (per-call overhead
        dominates one call per text)."""
        if not texts:
            return []
        if self._bare:
            return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]
        return self.tok(texts, add_special_tokens=False)["input_ids"]

    def turn(self, role: str, content: str) -> list[int]:
        return self._frame([role], [self.text(content)], 10**9)[0]

    def example(self, messages, max_length: int) -> tuple[list[int], list[int]]:
        """(input ids, labels) for training: labels are IGNORE outside assistant text + <eot>."""
        return self._frame([role for role, _ in messages], [self.text(c) for _, c in messages], max_length)

    def examples(self, conversations, max_length: int) -> list[tuple[list[int], list[int]]]:
        """``example`` for many conversations, with one batched tokenizer call for all their texts
        (per-call overhead dominates one call per turn)."""
        encoded = iter(self.texts([content for messages in conversations for _, content in messages]))
        return [self._frame([role for role, _ in m], [next(encoded) for _ in m], max_length) for m in conversations]

    def lengths(self, conversations, max_length: int) -> list[int]:
        """``len(example(m, max_length)[0])`` for each conversation, without building the ids: ``plan``
        counts every item of a DoIT-scale pool. _frame adds a role tag and an <eot> to each turn."""
        texts = [content for messages in conversations for _, content in messages]
        counts = list(map(self._counts(texts).__getitem__, texts))
        ends = list(accumulate(map(len, conversations)))
        return [min(sum(counts[a:b]) + 2 * (b - a), max_length) for a, b in zip([0, *ends], ends)]

    def text_lengths(self, texts: list[str]) -> list[int]:
        """``len(self.text(t))`` for each text; each distinct text encoded once (answers repeat: "A")."""
        counts = self._counts(texts)
        return [counts[t] for t in texts]

    def _counts(self, texts: list[str]) -> dict[str, int]:
        """Distinct text -> ``len(self.text(t))``."""
        distinct = list(dict.fromkeys(texts))
        if not self._bare:
            return dict(zip(distinct, [len(ids) for ids in self.texts(distinct)]))
        if not self._splits_by_byte_level_pattern():
            return dict(zip(distinct, self._encoded_lengths(distinct)))
        # A pool is millions of words but a few thousand distinct ones: split here, each distinct piece
        # is encoded once (encoding text by text splits and looks each word up again, 10x slower). A
        # text with an added token's string in it (matched before any split) is encoded whole.
        added = [t.content for t in self.tok.get_added_tokens_decoder().values()]
        joined = "\x00".join(distinct)  # most pools hold no added token's string at all: one search each
        added = [a for a in added if a in joined]
        whole = [t for t in distinct if any(a in t for a in added)] if added else []
        split = [t for t in distinct if not any(a in t for a in added)] if whole else distinct
        pieces = byte_level_pieces(split, self.tok.pre_tokenizer)
        vocab = list(set().union(*pieces))
        piece_len = dict(zip(vocab, self._encoded_lengths(vocab)))
        counts = dict(zip(split, [sum(map(piece_len.__getitem__, p)) for p in pieces]))
        counts.update(zip(whole, self._encoded_lengths(whole)))
        return counts

    def _encoded_lengths(self, texts: list[str]) -> list[int]:
        # encode_batch_fast: encode_batch's ids without the offsets, which no count needs
        return [len(e) for e in self.tok.encode_batch_fast(texts, add_special_tokens=False)] if texts else []

    def _splits_by_byte_level_pattern(self) -> bool:
        """Whether the bare tokenizer is plan's byte-level BPE: no normalizer, ByteLevel's regex split
        without a prefix space, a deterministic BPE, so a text's count is the sum of its pieces'."""
        from tokenizers import models, pre_tokenizers

        tok = self.tok
        pre = tok.pre_tokenizer
        return (tok.normalizer is None and isinstance(pre, pre_tokenizers.ByteLevel) and pre.use_regex
                and not pre.add_prefix_space and isinstance(tok.model, models.BPE) and tok.model.dropout is None)

    def _frame(self, roles, texts, max_length: int) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        labels: list[int] = []
        for role, text in zip(roles, texts):
            t = [self.user if role == "user" else self.assistant, *text, self.eot]
            ids += t
            labels += [IGNORE] + t[1:] if role == "assistant" else [IGNORE] * len(t)
        return ids[:max_length], labels[:max_length]

    def prompt(self, turns, max_length: int | None = None) -> list[int]:
        """Earlier turns, then the assistant tag: the model answers from here.

        Over-long prompts lose their oldest tokens (the few-shot examples), never the question.
        """
        ids = [i for role, content in turns for i in self.turn(role, content)] + [self.assistant]
        if max_length is not None and len(ids) > max_length:
            ids = ids[-max_length:]
        return ids

    def continuation(self, text: str) -> list[int]:
        """A candidate answer plus the end-of-turn token, as perplexity ranking scores it."""
        return self.text(text) + [self.eot]

    def decode(self, ids: list[int]) -> str:
        if self.eot in ids:
            ids = ids[: ids.index(self.eot)]
        return self.tok.decode(ids, skip_special_tokens=True).strip()
