"""The final answer of a chain-of-thought math reply, and the hand-written equivalence rules.

Pure string work: no model, no process, no environment change. ``extract_math_answer`` follows the
study's order (shared/STUDY_FACTS.md, "Scoring rules in detail", math), with the cleanup STUDY_FACTS
asks for (``clean_answer``: natural-language endings are not maths). ``math_equivalent_rules`` is the
fallback verdict where math_verify (evaluators/math_verify_worker.py) has none. Where a rule here reads
a reply differently from the study's own code, scoring.DIFFERENCES says so (docs/scoring.md).
"""

from __future__ import annotations

import importlib.util
import math
import re
import unicodedata
from fractions import Fraction
from typing import Callable

# optional: symbolic equivalence for math answers. sympy is imported on the first symbolic comparison,
# not with this module: it costs about a second, and `plan` (spec validation reads scoring.KINDS) makes none.
HAVE_SYMPY = importlib.util.find_spec("sympy") is not None


def _sympy_api():
    """(sympy, parse_expr, the parser's transformations)."""
    import sympy
    from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                            standard_transformations)

    return sympy, parse_expr, standard_transformations + (implicit_multiplication_application, convert_xor)


# ---------------------------------------------------------------------------------------------
# Extraction, in the study's order: 答案 marker, last \boxed{}, $...$ span, the dataset's special
# cases, the text after the last "=", the last number.
# ---------------------------------------------------------------------------------------------

ANSWER_MARKER = "答案"
# what joins the marker to the answer ("答案是：", "答案为", "答案\n"): not part of the answer, and it
# would keep "答案：1,2,3" from being exactly a list
_MARKER_TAIL = re.compile(r"^[\s:：是为]*")


def _balanced_brace_content(text: str, open_idx: int) -> str | None:
    """Content of the brace group opening at ``text[open_idx] == "{"``; None if never closed."""
    depth = 0
    for i in range(open_idx, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_idx + 1 : i]
    return None


def _last_boxed(text: str) -> str | None:
    """Content of the LAST \\boxed{...}, after its last "=" (``\\boxed{x = 5}`` gives 5); None when
    there is no \\boxed or the last one never closes (a truncated reply: the next rules decide)."""
    i = text.rfind("\\boxed")
    if i < 0:
        return None
    j = i + len("\\boxed")
    while j < len(text) and text[j] == " ":
        j += 1
    if j >= len(text) or text[j] != "{":
        return None
    content = _balanced_brace_content(text, j)
    if content is None:
        return None
    return content.rsplit("=", 1)[-1].lstrip(" ")


def _dollar_span(text: str) -> str | None:
    """The study's span: on the last line holding two or more "$", everything between its first and
    last "$" (so "$3$ 或 $4$" gives "3$ 或 $4", read later as the list 3, 4); after its last "="."""
    for line in reversed(text.split("\n")):
        first, last = line.find("$"), line.rfind("$")
        if first != last:
            return line[first + 1 : last].rsplit("=", 1)[-1].lstrip(" ")
    return None


_RATIO = re.compile(r"[A-Za-z0-9]+[/:][A-Za-z0-9]+")  # 3/4, x/y, and the ratio 1:2
_NUMBER_LIST = re.compile(r"-?\d+(?:\.\d+)?(?:\s*,\s*-?\d+(?:\.\d+)?)*")
# a tuple or interval: brackets with a comma inside and no bracket nested; either end may be open
# or closed, so "(0,1]" counts; "(2)" is grouping, not a tuple
_TUPLE = re.compile(r"[(\[][^()\[\]]*,[^()\[\]]*[)\]]")
_SQRT = "sqrt("
_TERM_CHARS = set("0123456789+-*/^(). ")


def _around(s: str, start: int, end: int) -> str:
    """The whole term around s[start:end]: neighbouring digits, operators, brackets, spaces and
    further sqrt(...) (so "x=3sqrt(2)" gives 3sqrt(2), never the bare sqrt(2))."""
    while start > 0 and (s[start - 1] in _TERM_CHARS or s[max(0, start - 4) : start] == "sqrt"):
        start -= 4 if s[max(0, start - 4) : start] == "sqrt" else 1
    while end < len(s) and (s[end] in _TERM_CHARS or s.startswith("sqrt", end)):
        end += 4 if s.startswith("sqrt", end) else 1
    return s[start:end].strip()


def _special_case(text: str) -> str | None:
    """The dataset's special cases: the whole text exactly a ratio a/b or a list of numbers
    (full-width commas too); else the last sqrt(...), with its term; else the last tuple/interval."""
    s = text.strip().replace("：", ":")
    if _RATIO.fullmatch(s):
        return s
    s = s.replace("，", ",")
    if _NUMBER_LIST.fullmatch(s):
        return s
    i = s.rfind(_SQRT)
    if i >= 0:
        close = s.find(")", i)
        if close >= 0:
            return _around(s, i, close + 1)
    tuples = _TUPLE.findall(s)
    return tuples[-1] if tuples else None


# a value ends at its line or sentence: 。 ； ， or a period before a space (decimals survive)
_VALUE_END = re.compile(r"\n|。|；|，|\.(?=\s)")


def _after_last_equals(text: str) -> str | None:
    if "=" not in text:
        return None
    return _VALUE_END.split(text.rsplit("=", 1)[1].lstrip(), maxsplit=1)[0].strip()


# One number: a sign only where it cannot be a subtraction (not right after a digit, letter or
# bracket); thousands groups, decimals (".5" too), a fraction a/b and a percent sign belong to it.
# A CJK unit may follow ("5个"); it is no number on its own when a letter, digit or magnitude follows
# ("3x", "2nd", "5万"), or when it is part of a power, a root, a multiple of pi or a LaTeX group
# ("2^3", "√2", "2 pi", "\frac{1}{2}", the ratio "1:2"): the last number must never be a wrong value
# taken from them.
_NUMBER = re.compile(
    r"(?<![\d.{^√])(?<!\d[:：])(?:(?<![0-9A-Za-z)\]}])[-−])?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)(?:/\d+)?%?"
    r"(?![A-Za-z0-9_/}十百千万亿]|\.\d|[:：]\d|\s*(?:\^|√|π|\\?pi\b|\\?sqrt))"
)


def _last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def extract_math_answer(text: str) -> str | None:
    """The reply's final answer (cleaned, see ``clean_answer``), or None when no rule finds one.

    The rules, first that applies: cut to the text after the last 答案 (then go on with that text);
    the last \\boxed{...}; a $...$ span; the dataset's special cases (``_special_case``); the text
    after the last "="; the last number. Several answers joined by 或 form a list "a, b"."""
    if ANSWER_MARKER in text:
        text = _MARKER_TAIL.sub("", text.rsplit(ANSWER_MARKER, 1)[1])
    for rule in (_last_boxed, _dollar_span, _special_case, _after_last_equals):
        answer = rule(text)
        if answer is not None and (answer.strip() or rule is _after_last_equals):
            break
    else:
        answer = _last_number(text)
    if answer is None:
        return None
    answer = clean_answer(answer)
    return answer or None


# ---------------------------------------------------------------------------------------------
# Cleanup: natural-language endings are not maths
# ---------------------------------------------------------------------------------------------

_QUOTES = {"「": "」", "『": "』", "“": "”", "‘": "’", '"': '"'}
# closing punctuation, "!" and "！" included: "答案是 3！" is 3, not 3 factorial
_CLOSING = "。．.,，;；!！?？、:："
_NUM = r"[-+−]?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)(?:/\d+)?%?"
# words that are maths, not units, after a number ("2 pi" is not 2)
_MATH_WORDS = {"pi", "sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "lg", "exp",
               "inf", "infty", "infinity", "mod", "i", "e"}
_WORD = r"[A-Za-z]{2,}\.?(?:\^?[23²³])?"
_WORD_UNIT = re.compile(rf"({_NUM})\s*({_WORD}(?:\s+{_WORD})*)")
# a CJK unit, but not a magnitude (5万 is 50000, not 5)
_CJK_UNIT = re.compile(rf"({_NUM})\s*([\u4e00-\u9fff]+)")
_MAGNITUDES = "十百千万亿"
_TEXT_WRAP = re.compile(r"\\(?:text|mbox|mathrm)\{([^{}]*)\}")
_LIST_SEPARATOR = re.compile(r"(\s*[,，]\s*)")


def _drop_unit(element: str) -> str:
    if len(element) > 100:  # no number with a unit is this long
        return element
    m = _WORD_UNIT.fullmatch(element)
    if m and not any(w.lower().rstrip(".") in _MATH_WORDS for w in m.group(2).split()):
        return m.group(1)
    m = _CJK_UNIT.fullmatch(element)
    if m and m.group(2)[0] not in _MAGNITUDES:
        return m.group(1)
    return element


def clean_answer(answer: str) -> str:
    """An extracted answer without its natural-language wrapping: no $ signs; 或 (or 或者) joins a list
    "a, b"; closing punctuation (。 . ! ！ ...) and wrapping quotes 「」“”‘’ are dropped, as are unit
    words after a number ("5 dollars", "5 people", "\\text{5 apples}", "5个"; not "5万" or "2 pi");
    ".5" is 0.5. What remains is left for the equivalence check."""
    s = answer.replace("$", "")
    s = re.sub(r"\s*或者?\s*", ", ", s).strip()
    while True:
        before = s
        s = s.rstrip(_CLOSING).strip()
        if len(s) >= 2 and _QUOTES.get(s[0]) == s[-1]:
            s = s[1:-1].strip()
        m = _TEXT_WRAP.fullmatch(s)
        if m:
            s = m.group(1).strip()
        if s == before:
            break
    parts = _LIST_SEPARATOR.split(s)
    parts[::2] = [_drop_unit(p) for p in parts[::2]]
    s = "".join(parts)
    return re.sub(r"(?<![\w.])\.(?=\d)", "0.", s)


# ---------------------------------------------------------------------------------------------
# Normalisation and the hand-written equivalence rules
# ---------------------------------------------------------------------------------------------


def normalize_math(answer: str) -> str:
    """A canonical string for an answer: no spaces, $, \\left/\\right, thin spaces, degree signs or
    trailing period; \\dfrac/\\tfrac -> \\frac; \\text{} unwrapped (a trailing \\text{} unit after a
    number is dropped, as is a CJK unit or a spaced word unit: "5元", "12 cm"); 或/or/and -> ","."""
    s = unicodedata.normalize("NFKC", answer)
    s = s.replace("−", "-").replace("–", "-").replace("\\$", "").replace("$", "")
    s = re.sub(r"\\[()\[\]]", "", s)
    for tok in ("\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:"):
        s = s.replace(tok, "")
    s = s.replace("\\ ", " ")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\^\{?\\circ\}?|°", "", s)
    s = s.replace("\\%", "%")
    s = re.sub(r"(?<=[\d}])\s*\\(?:text|mbox|mathrm)\{[^{}]*\}\s*\.?\s*$", "", s)
    s = re.sub(r"\\(?:text|textbf|mbox|mathrm|mathbf)\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\s+(?:or|and)\s+", ",", s)
    s = s.replace("或", ",")
    s = s.strip().rstrip(".。").strip()
    m = re.fullmatch(r"([-+]?\d[\d,]*(?:\.\d+)?%?)\s+[A-Za-z]+\.?", s)
    if m:
        s = m.group(1)
    s = re.sub(r"\s+", "", s)
    m = re.fullmatch(r"((?:[A-Za-z]=)?[-+]?\d[\d,]*(?:\.\d+)?(?:/\d+)?%?)[\u4e00-\u9fff]+", s)
    if m:
        s = m.group(1)
    return s.rstrip(".。")


_CLOSE = {"(": ")", "[": "]", "{": "}"}


def _split_top_level(s: str) -> list[str]:
    """Split at commas outside any bracket."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unwrap_list(s: str) -> tuple[str, list[str]]:
    """("(]", elements) for a bracketed tuple/interval, ("{}", ...) for \\{...\\}, ("", ...) bare."""
    if s.startswith("\\{") and s.endswith("\\}"):
        return "{}", _split_top_level(s[2:-2])
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _wraps_whole(s):
        items = _split_top_level(s[1:-1])
        if len(items) > 1:
            return s[0] + s[-1], items
    return "", _split_top_level(s)


def _wraps_whole(s: str) -> bool:
    """Does the bracket opening at s[0] close only at s[-1]? ("(1,2)" yes, "(1)+(2)" no)"""
    depth = 0
    for i, ch in enumerate(s):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and i < len(s) - 1:
            return False
    return depth == 0


_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?")


def _split_assignment(element: str) -> tuple[str | None, str]:
    """"x=3" -> ("x", "3"); "2+3=5" -> (None, "5"); "3" -> (None, "3")."""
    if "=" not in element or re.search(r"[<>!]=|\\(?:le|ge|ne)", element):
        return None, element
    lhs, value = element.split("=", 1)[0], element.rsplit("=", 1)[1]
    name = lhs if re.fullmatch(r"[A-Za-z](?:_\{?\w+\}?)?", lhs) else None
    return name, value


def _to_number(s: str) -> tuple[Fraction, bool] | None:
    """(value, is_percent) for an integer, decimal, thousands-grouped number, a/b or \\frac{a}{b}."""
    percent = s.endswith("%")
    if percent:
        s = s[:-1]
    sign = 1
    if s[:1] in "+-":
        sign, s = (-1 if s[0] == "-" else 1), s[1:]
    try:
        if _THOUSANDS.fullmatch(s):
            return sign * Fraction(s.replace(",", "")), percent
        if re.fullmatch(r"\d+(?:\.\d*)?|\.\d+", s):
            return sign * Fraction(s), percent
        m = re.fullmatch(r"(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)", s) or re.fullmatch(
            r"\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}", s
        ) or re.fullmatch(r"\\frac(\d)(\d)", s)
        if m:
            return sign * Fraction(m.group(1)) / Fraction(m.group(2)), percent
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _numbers_close(a: Fraction, b: Fraction) -> bool:
    """Integers must be equal; otherwise a relative tolerance of 1e-4 (so a decimal rounded to five
    significant digits matches a fraction: 0.33333 ~ 1/3, but 0.33 does not)."""
    if a.denominator == 1 and b.denominator == 1:
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-4, abs_tol=1e-9)


def _numeric_equiv(a: str, b: str) -> bool | None:
    """None when either side is not a plain number. A percentage p% also matches p and p/100."""
    na, nb = _to_number(a), _to_number(b)
    if na is None or nb is None:
        return None
    (va, pa), (vb, pb) = na, nb
    if _numbers_close(va, vb):
        return True
    if pa != pb:
        return _numbers_close(va / 100, vb) if pa else _numbers_close(va, vb / 100)
    return False


# --- sympy, restricted to a safe LaTeX/plain-text subset -------------------------------------

_SYMPY_MAX_LEN = 120
_ALLOWED_NAMES = {"sqrt", "pi"}
_SMALL_EXPONENT = re.compile(
    r"\(-?\d{1,2}\)|\(1/\d{1,2}\)|\([A-Za-z]\)|-?\d{1,2}(?![\d.])|[A-Za-z](?![A-Za-z])"
)


def _replace_command(s: str, command: str, arity: int, build: Callable[..., str]) -> str | None:
    """Rewrite every ``\\command{a}{b}`` (brace groups, nested ok) with ``build(a, b)``."""
    while True:
        i = s.find(command)
        if i < 0:
            return s
        j = i + len(command)
        args = []
        for _ in range(arity):
            if j < len(s) and s[j] == "{":
                content = _balanced_brace_content(s, j)
                if content is None:
                    return None
                args.append(content)
                j += len(content) + 2
            elif j < len(s) and s[j].isalnum():  # \frac12, \sqrt2
                args.append(s[j])
                j += 1
            else:
                return None
        s = s[:i] + build(*args) + s[j:]


def _latex_to_plain(s: str) -> str | None:
    """LaTeX subset -> sympy syntax; None when anything outside the subset remains."""
    s = re.sub(r"\\sqrt\[(\d{1,2})\]", r"\\root{\1}", s)
    s = _replace_command(s, "\\frac", 2, lambda a, b: f"(({a})/({b}))")
    if s is None:
        return None
    s = _replace_command(s, "\\root", 2, lambda n, a: f"(({a})^(1/{n}))")
    if s is None:
        return None
    s = _replace_command(s, "\\sqrt", 1, lambda a: f"sqrt({a})")
    if s is None:
        return None
    s = s.replace("\\pi", "pi").replace("\\cdot", "*").replace("\\times", "*").replace("\\div", "/")
    s = s.replace("{", "(").replace("}", ")")
    s = re.sub(r"sqrt(\d+|[A-Za-z](?![A-Za-z]))", r"sqrt(\1)", s)
    return None if "\\" in s else s


def _safe_for_sympy(s: str) -> bool:
    if len(s) > _SYMPY_MAX_LEN or not re.fullmatch(r"[0-9A-Za-z+\-*/^().]+", s):
        return False
    if re.search(r"(?<!\d)\.|\.(?!\d)", s):  # a dot only inside a decimal number: no attribute access
        return False
    if any(len(w) > 1 and w not in _ALLOWED_NAMES for w in re.findall(r"[A-Za-z]+", s)):
        return False
    if re.search(r"\d{16,}", s):
        return False
    # at most two powers, each with a small literal exponent: nothing can blow up
    powers = [m.end() for m in re.finditer(r"\^|\*\*", s)]
    return len(powers) <= 2 and all(_SMALL_EXPONENT.match(s, p) for p in powers)


def _sympify(s: str):
    plain = _latex_to_plain(s)
    if plain is None or not _safe_for_sympy(plain):
        return None
    sympy, parse_expr, transformations = _sympy_api()
    local = {c: sympy.Symbol(c) for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"}
    local.update(pi=sympy.pi, sqrt=sympy.sqrt)
    return parse_expr(plain, local_dict=local, transformations=transformations)


def _symbolic_equiv(a: str, b: str) -> bool:
    if not HAVE_SYMPY:
        return False
    try:
        ea, eb = _sympify(a), _sympify(b)
        if ea is None or eb is None:
            return False
        sympy = _sympy_api()[0]
        diff = sympy.simplify(ea - eb)
        if diff == 0:
            return True
        if not diff.free_symbols:
            scale = max(1.0, abs(float(sympy.N(eb))))
            return abs(float(sympy.N(diff))) <= 1e-4 * scale
    except Exception:  # any parse/simplify failure is "not shown equivalent"
        return False
    return False


def _atom_equiv(a: str, b: str) -> bool:
    if a == b:
        return True
    numeric = _numeric_equiv(a, b)
    if numeric is not None:
        return numeric
    return _symbolic_equiv(a, b)


def _element_equiv(a: str, b: str) -> bool:
    name_a, value_a = _split_assignment(a)
    name_b, value_b = _split_assignment(b)
    if name_a is not None and name_b is not None and name_a != name_b:
        return False
    return value_a != "" and _atom_equiv(value_a, value_b)


def math_equivalent_rules(prediction: str | None, reference: str | None) -> bool:
    """The study's hand-written equivalence rules (the fallback when math_verify cannot decide).

    Normalised strings first; then lists (bracketed tuples/intervals: same brackets, elements in
    order; bare lists or \\{sets\\}: any order); then each element: "x=3" compares as 3 (names must
    agree when both sides name them), numbers with the tolerance of ``_numbers_close``, then sympy.
    """
    if prediction is None or reference is None:
        return False
    a, b = normalize_math(prediction), normalize_math(reference)
    if not a or not b:
        return False
    if a == b:
        return True
    if _THOUSANDS.fullmatch(a) or _THOUSANDS.fullmatch(b):
        return _element_equiv(a, b)
    wrap_a, items_a = _unwrap_list(a)
    wrap_b, items_b = _unwrap_list(b)
    if len(items_a) == 1 and len(items_b) == 1 and not wrap_a and not wrap_b:
        return _element_equiv(a, b)
    if wrap_a != wrap_b or len(items_a) != len(items_b):
        return False
    if wrap_a in ("", "{}"):  # unordered: greedy one-to-one matching
        remaining = list(items_b)
        for x in items_a:
            hit = next((i for i, y in enumerate(remaining) if _element_equiv(x, y)), None)
            if hit is None:
                return False
            remaining.pop(hit)
        return True
    return all(_element_equiv(x, y) for x, y in zip(items_a, items_b))

