"""A checkpoint's chat framing, shared by training and scoring so both see the same tokens.

Two framings, one interface (``Framing``), and one rule for which a tokenizer takes (``framing_for``):

- the study's (``ChatEncoder``, a model's ``chat: study``): tokens the project adds,
  ``<user> text <eot> <assistant> text <eot> ...``;
- the tokenizer's own chat template (``TemplateFraming``, ``chat: template``): no token added.

Loss is taken only on assistant text and the end of its turn.
"""

from __future__ import annotations

import re
from itertools import accumulate
from typing import Protocol, Sequence

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


def _keep_last(ids: list[int], max_length: int | None) -> list[int]:
    """A prompt cut from the left: it loses its oldest tokens (the few-shot examples), never the question."""
    return ids if max_length is None or len(ids) <= max_length else ids[-max_length:]


class _Replies:
    """What both framings do with the end-of-turn id ``eot``: end a candidate with it, stop a reply at it."""

    def continuation(self, text: str) -> list[int]:
        """A candidate answer plus the end-of-turn token, as perplexity ranking scores it."""
        return self.text(text) + [self.eot]

    def decode(self, ids: list[int]) -> str:
        if self.eot in ids:
            ids = ids[: ids.index(self.eot)]
        return self.tok.decode(ids, skip_special_tokens=True).strip()


class ChatEncoder(_Replies):
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
        return _keep_last([i for role, content in turns for i in self.turn(role, content)] + [self.assistant],
                          max_length)


class ChatFormatError(ValueError):
    """A tokenizer whose chat format cannot frame the study's conversations."""


class Framing(Protocol):
    """What training and scoring ask of a checkpoint's chat framing (ChatEncoder, TemplateFraming)."""

    tok: object  # the tokenizer it frames with
    eot: int  # the token that ends an assistant turn: replies stop there
    pad: int

    def text(self, s: str) -> list[int]: ...
    def texts(self, texts: list[str]) -> list[list[int]]: ...
    def text_lengths(self, texts: list[str]) -> list[int]: ...
    def example(self, messages, max_length: int) -> tuple[list[int], list[int]]: ...
    def examples(self, conversations, max_length: int) -> list[tuple[list[int], list[int]]]: ...
    def lengths(self, conversations, max_length: int) -> list[int]: ...
    def prompt(self, turns, max_length: int | None = None) -> list[int]: ...
    def continuation(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


def missing_study_tokens(tokenizer, tokens: Sequence[str] = (USER, ASSISTANT, EOT)) -> list[str]:
    """Which of ``tokens`` the tokenizer lacks as tokens of their own (a bare or a transformers one)."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return [t for t in tokens if tokenizer.token_to_id(t) is None]
    return [t for t in tokens if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]


def framing_for(tokenizer) -> Framing:
    """The framing a checkpoint's tokenizer was trained with: the one rule training, plan and every scoring
    backend follow. The study's tokens present: the study's framing (``chat: study`` added them, a preset
    was trained with them); else the tokenizer's chat template (``chat: template`` adds nothing and
    platform/train/models.py refuses a tokenizer that already has the study's tokens)."""
    if not missing_study_tokens(tokenizer):
        return ChatEncoder(tokenizer)
    if getattr(tokenizer, "chat_template", None):
        return TemplateFraming(tokenizer)
    raise ChatFormatError(f"the tokenizer has neither the study's chat tokens ({USER} {ASSISTANT} {EOT}) nor a chat "
                          "template (chat_template in tokenizer_config.json, or chat_template.jinja)")


# A message's content while a template's layout is rendered: private-use code points, which neither a
# template's own text nor a data item holds, so the rendered text splits at them unambiguously.
_SENTINEL = "\ue000{}\ue001"
# The conversation a template is first checked with: its content must come out verbatim.
_PROBE = (("user", "What is 12 plus 30?"), ("assistant", "42"))


class TemplateFraming(_Replies):
    """Conversations framed by the tokenizer's own chat template, no token added.

    A template is rendered once per sequence of roles, with sentinels for the contents: the text between
    them is the template's scaffolding. An assistant turn is marked by rendering prefixes: the
    conversation up to it with the generation prompt (P) and up to its end (Q); P must be where its content
    begins, and what Q renders after the content (e.g. "<|im_end|>\\n") is the end of the turn, the same
    for every turn, whose first token is a special token: the stop token. Loss is on the content and the
    end of the turn; a scoring prompt is the template's generation prompt, so it is the training ids up to
    the answer. Scaffolding, each content and each end of a turn are tokenized apart, so training and
    scoring cut tokens at the same places (a letter answer "A" is the token it is in training)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise ChatFormatError("the tokenizer has no chat template (chat_template in tokenizer_config.json, or "
                                  "chat_template.jinja)")
        self._layouts: dict[tuple[tuple[str, ...], bool], list[tuple[str | int, bool]]] = {}
        self._scaffold: dict[str, list[int]] = {}
        self.end = ""  # the end of an assistant turn, found by the probe's layout
        roles = tuple(role for role, _ in _PROBE)
        layout = self._layout(roles, False)
        expected = "".join(_PROBE[p][1] if isinstance(p, int) else p for p, _ in layout)
        if self._render(_PROBE, False) != expected:
            raise ChatFormatError("cannot mark the assistant's span: the chat template does not render a message's "
                                  f"content verbatim (it changes {_PROBE[0][1]!r} or {_PROBE[1][1]!r})")
        end_ids = self._ids(self.end)
        special = set(getattr(tokenizer, "all_special_ids", ())) | set(getattr(tokenizer, "added_tokens_decoder", {}))
        if end_ids[0] not in special:
            raise ChatFormatError(f"cannot mark the assistant's span: an assistant turn ends with {self.end!r}, whose "
                                  "first token is no special token, so a reply could not be stopped there")
        self.eot = end_ids[0]
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eot

    def _render(self, messages, generation_prompt: bool) -> str:
        try:
            return self.tok.apply_chat_template([{"role": r, "content": c} for r, c in messages], tokenize=False,
                                                add_generation_prompt=generation_prompt)
        except Exception as e:  # jinja2's errors, and a template's own raise_exception
            roles = ", ".join(r for r, _ in messages)
            raise ChatFormatError(f"cannot mark the assistant's span: the chat template fails on a conversation of "
                                  f"roles [{roles}]: {type(e).__name__}: {e}") from None

    def _layout(self, roles: tuple[str, ...], generation_prompt: bool) -> list[tuple[str | int, bool]]:
        """The rendered conversation of these roles as parts in order: scaffolding text or a content's
        index, each with whether it is trained on (an assistant's content and the end of its turn)."""
        key = (roles, generation_prompt)
        if key in self._layouts:
            return self._layouts[key]
        marks = [_SENTINEL.format(i) for i in range(len(roles))]
        text = self._render(list(zip(roles, marks)), generation_prompt)
        at = []
        for i, (role, mark) in enumerate(zip(roles, marks)):
            if text.count(mark) != 1 or (at and text.index(mark) < at[-1]):
                raise ChatFormatError(f"cannot mark the assistant's span: the chat template does not render message "
                                      f"{i} ({role}) once, in order, in a conversation of roles [{', '.join(roles)}]")
            at.append(text.index(mark))
        parts: list[tuple[str | int, bool]] = []
        start = 0
        for i, (role, mark) in enumerate(zip(roles, marks)):
            before = text[start:at[i]]
            if role == "assistant":
                prefix = self._render(list(zip(roles[:i], marks)), True)
                if prefix != text[:at[i]]:
                    raise ChatFormatError(
                        "cannot mark the assistant's span: the template's generation prompt does not end where the "
                        f"assistant's content begins (the prompt ends {prefix[-40:]!r}, the content follows "
                        f"{text[max(0, at[i] - 40):at[i]]!r})")
            if parts and parts[-1][1] and isinstance(parts[-1][0], int):
                parts.append((self.end, True))  # the assistant turn before ends so: text starts with its turn
                before = before[len(self.end):]
            if before:
                parts.append((before, False))
            parts.append((i, role == "assistant"))
            start = at[i] + len(mark)
            if role == "assistant":
                turn = self._render(list(zip(roles[: i + 1], marks)), False)
                end = turn[start:]
                if not text.startswith(turn) or not end:
                    raise ChatFormatError(f"cannot mark the assistant's span: the template renders nothing after the "
                                          f"assistant's content, or renders it differently once later turns follow")
                if not self.end:
                    self.end = end
                elif end != self.end:
                    raise ChatFormatError(f"cannot mark the assistant's span: assistant turns end differently "
                                          f"({self.end!r} and {end!r})")
        rest = text[start:]
        if parts[-1][1] and isinstance(parts[-1][0], int):
            parts.append((self.end, True))  # checked above: the conversation's text ends with it
            rest = rest[len(self.end):]
        if rest:
            parts.append((rest, False))
        self._layouts[key] = parts
        return parts

    def _ids(self, scaffold: str) -> list[int]:
        if scaffold not in self._scaffold:
            self._scaffold[scaffold] = self.text(scaffold)
        return self._scaffold[scaffold]

    def text(self, s: str) -> list[int]:
        return self.texts([s])[0]

    def texts(self, texts: list[str]) -> list[list[int]]:
        return self.tok(texts, add_special_tokens=False)["input_ids"] if texts else []

    def text_lengths(self, texts: list[str]) -> list[int]:
        distinct = list(dict.fromkeys(texts))
        counts = dict(zip(distinct, map(len, self.texts(distinct))))
        return [counts[t] for t in texts]

    def _frame(self, roles: tuple[str, ...], contents: list[list[int]], generation_prompt: bool,
               ) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        labels: list[int] = []
        for part, trained in self._layout(roles, generation_prompt):
            t = contents[part] if isinstance(part, int) else self._ids(part)
            ids += t
            labels += t if trained else [IGNORE] * len(t)
        return ids, labels

    def example(self, messages, max_length: int) -> tuple[list[int], list[int]]:
        return self.examples([messages], max_length)[0]

    def examples(self, conversations, max_length: int) -> list[tuple[list[int], list[int]]]:
        """(input ids, labels) per conversation; one batched tokenizer call for all their contents."""
        encoded = iter(self.texts([content for messages in conversations for _, content in messages]))
        out = []
        for messages in conversations:
            ids, labels = self._frame(tuple(r for r, _ in messages), [next(encoded) for _ in messages], False)
            out.append((ids[:max_length], labels[:max_length]))
        return out

    def lengths(self, conversations, max_length: int) -> list[int]:
        """``len(example(m, max_length)[0])`` for each conversation: scaffolding counted once per layout."""
        counts = iter(self.text_lengths([content for messages in conversations for _, content in messages]))
        out = []
        for messages in conversations:
            n = [next(counts) for _ in messages]
            layout = self._layout(tuple(r for r, _ in messages), False)
            out.append(min(sum(n[p] if isinstance(p, int) else len(self._ids(p)) for p, _ in layout), max_length))
        return out

    def prompt(self, turns, max_length: int | None = None) -> list[int]:
        """Earlier turns and the template's generation prompt; over-long prompts lose their oldest tokens."""
        return _keep_last(self._frame(tuple(r for r, _ in turns), self.texts([c for _, c in turns]), True)[0],
                          max_length)
