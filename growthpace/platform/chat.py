"""The study's chat framing, shared by training and scoring so both see the same tokens.

    <user> text <eot> <assistant> text <eot> ...

Loss is taken only on assistant text and its <eot>.
"""

from __future__ import annotations

import re

from growthpace.platform.abilities import ASSISTANT, EOT, PAD, USER

IGNORE = -100

# ByteLevel's pre-tokenizer split (GPT-2's pattern, 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
# ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+) on ASCII text, where \p{L} is [A-Za-z], \p{N} [0-9] and
# Oniguruma's \s [\t\n\v\f\r ] (not Python's, which adds \x1c-\x1f). BPE encodes each piece alone, so
# an ASCII text's token count is the sum of its pieces' counts (ChatEncoder.text_lengths).
_ASCII_PIECES = re.compile(
    r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\t\n\x0b\x0c\r A-Za-z0-9]+"
    r"|[\t\n\x0b\x0c\r ]+(?![^\t\n\x0b\x0c\r ])|[\t\n\x0b\x0c\r ]+"
)


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
        counts = iter(self.text_lengths([content for messages in conversations for _, content in messages]))
        return [min(sum(next(counts) + 2 for _ in m), max_length) for m in conversations]

    def text_lengths(self, texts: list[str]) -> list[int]:
        """``len(self.text(t))`` for each text; each distinct text encoded once (answers repeat: "A")."""
        distinct = list(dict.fromkeys(texts))
        counts = dict(zip(distinct, self._distinct_lengths(distinct)))
        return [counts[t] for t in texts]

    def _distinct_lengths(self, texts: list[str]) -> list[int]:
        if not self._bare:
            return [len(ids) for ids in self.texts(texts)]
        # encode_batch_fast: encode_batch's ids without the offsets, which no count needs
        encode = lambda batch: [len(e) for e in self.tok.encode_batch_fast(batch, add_special_tokens=False)] if batch else []
        if not self._splits_like_ascii_pieces():
            return encode(texts)
        # A generated pool is millions of words but a few thousand distinct ones: the tokenizer encodes
        # each distinct piece once, text by text it would split and look each one up again (5x slower).
        # A text with an added token's string in it (the tokenizer matches those before splitting) or
        # with non-ASCII characters is encoded whole.
        added = [t.content for t in self.tok.get_added_tokens_decoder().values()]
        simple = [t.isascii() and not any(a in t for a in added) for t in texts]
        pieces = [_ASCII_PIECES.findall(t) for t, ok in zip(texts, simple) if ok]
        vocab = list(set().union(*pieces))
        piece_len = dict(zip(vocab, encode(vocab)))
        whole = iter(encode([t for t, ok in zip(texts, simple) if not ok]))
        split = iter([sum(map(piece_len.__getitem__, p)) for p in pieces])
        return [next(split) if ok else next(whole) for ok in simple]

    def _splits_like_ascii_pieces(self) -> bool:
        """Whether the bare tokenizer is plan's byte-level BPE: no normalizer, ByteLevel's regex split
        without a prefix space, a deterministic BPE; then _ASCII_PIECES splits an ASCII text as it does."""
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
