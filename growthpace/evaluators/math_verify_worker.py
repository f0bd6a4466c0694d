"""math_verify, the primary verdict on math equivalence, behind a killable child process.

math_verify (HuggingFace's maintained answer checker: LaTeX/expression parsing into sympy, then
numeric, symbolic, set, interval and relation comparison) decides equivalence; the hand-written
rules (evaluators/math_answer.py) are the fallback when it is not installed, raises, times out, or
cannot parse a side into an expression. Its timeouts use signal.alarm, which works only in a
process's main thread: Ray Data runs actor UDFs in a thread pool (checked: "ThreadPoolExecutor-0_0",
signal.signal raises ValueError there), so off the main thread each call goes to a supervised child
process that is killed when it overruns. Signal timeouts cannot interrupt one long C-level operation
(a huge integer power), so inputs that could start one are screened out first (they get no verdict).

This is the one evaluation module that starts a process; it decides no item's score.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import importlib.util
import json
import os
import re
import select
import subprocess
import sys
import threading
import unicodedata
from pathlib import Path

# math_verify needs sympy; imported on first use (a few seconds)
try:
    HAVE_MATH_VERIFY = (
        importlib.util.find_spec("sympy") is not None and importlib.util.find_spec("math_verify") is not None
    )
    MATH_VERIFY_VERSION = importlib.metadata.version("math-verify") if HAVE_MATH_VERIFY else None
except (ImportError, ValueError, importlib.metadata.PackageNotFoundError):  # pragma: no cover
    HAVE_MATH_VERIFY, MATH_VERIFY_VERSION = False, None

MATH_VERIFY_TIMEOUT_S = 2  # per parse/verify step (signal.alarm takes whole seconds)
_MV_MAX_LEN = 200
_MV_SAFE_EXPONENT = re.compile(
    r"[-+]?(?:\d{1,3}|[A-Za-z]|[A-Za-z][-+]\d|\d/\d|\\circ|\\prime|\\frac\{?\d\}?\{?\d\}?)"
)
_mv_module = None


def _load_math_verify():
    """math_verify, imported on first use (with sympy, a few seconds); None when unavailable."""
    global _mv_module, HAVE_MATH_VERIFY
    if _mv_module is None and HAVE_MATH_VERIFY:
        try:
            import math_verify
            from math_verify.errors import TimeoutException

            # warm up (lazy imports, grammar set-up: seconds on a busy machine) under a generous
            # alarm, so the first real answer is not timed out by the cold start
            math_verify.verify(
                math_verify.parse("$\\frac{1}{2}$", parsing_timeout=60),
                math_verify.parse("$0.5$", parsing_timeout=60),
                timeout_seconds=60,
            )
            _mv_module = (math_verify, TimeoutException)
        except Exception:  # installed but broken: the rules decide from now on
            HAVE_MATH_VERIFY = False
    return _mv_module


def _mv_prepare(answer: str) -> str | None:
    """An extracted answer as math_verify should read it, or None when it is unsafe to parse."""
    s = unicodedata.normalize("NFKC", answer)
    s = s.replace("−", "-").replace("–", "-").replace("\\$", "").replace("$", "")
    s = re.sub(r"\\[()\[\]]", "", s)
    s = re.sub(r"\s*或者?\s*", ", ", s)  # "3或4": the study's "or" between roots
    s = re.sub(r"(?<=\d) (?=\d{3}(?!\d))", "", s)  # "1 000" is one number, not 1*000
    s = s.strip().rstrip("。.").strip()
    if not s or len(s) > _MV_MAX_LEN or re.search(r"\d{16,}|\d{4,}\s*!", s):
        return None
    return s if _small_powers(s) else None


def _small_powers(s: str) -> bool:
    """At most 3 powers (^ or **), each with a short exponent (<= 3 digits, a letter, \\circ, ...):
    no power tower or huge integer power can reach sympy."""
    powers = [m.end() for m in re.finditer(r"\^|\*\*", s)]
    if len(powers) > 3:
        return False
    for i in powers:
        rest = s[i:].lstrip()
        if rest[:1] in ("{", "("):
            close, depth = None, 0
            for j, ch in enumerate(rest):
                depth += ch in "{("
                depth -= ch in "})"
                if depth == 0:
                    close = j
                    break
            if close is None:
                return False
            exponent = rest[1:close].strip()
        else:
            m = re.match(r"[-+]?(?:\d+|\\[A-Za-z]+|[A-Za-z])", rest)
            exponent = m.group(0) if m else ""
        if not _MV_SAFE_EXPONENT.fullmatch(exponent):
            return False
    return True


def _math_verify_direct(prediction: str, reference: str, timeout_s: int) -> bool | None:
    """math_verify's verdict in this thread (signal timeouts: main thread only); None = no verdict."""
    loaded = _load_math_verify()
    if loaded is None:
        return None
    mv, timeout_error = loaded
    try:
        gold = mv.parse(f"${reference}$", parsing_timeout=timeout_s, raise_on_error=True)
        target = mv.parse(f"${prediction}$", parsing_timeout=timeout_s, raise_on_error=True)
        # a side parsed only as a raw string would be compared as a string: leave that to the rules
        if not any(not isinstance(g, str) for g in gold) or not any(not isinstance(t, str) for t in target):
            return None
        return bool(mv.verify(gold, target, timeout_seconds=timeout_s, raise_on_error=True))
    except (Exception, timeout_error):
        return None


class MathVerifyWorker:
    """A child process answering math_verify requests (one JSON line each way), killed and restarted
    when a request overruns ``timeout_s``; used off the main thread, where signals cannot time out."""

    START_TIMEOUT_S = 60.0

    def __init__(self, timeout_s: float, command: list[str] | None = None):
        self.timeout_s = timeout_s
        self.command = command or _serve_command()
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.failures = 0  # consecutive start failures; after 3 the worker gives up (rules decide)

    def _start(self) -> bool:
        self.proc = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, encoding="utf-8", bufsize=1,
        )
        if self._readline(self.START_TIMEOUT_S) == "ready":
            self.failures = 0
            return True
        self.stop()
        self.failures += 1
        return False

    def _readline(self, timeout_s: float) -> str | None:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return line.strip() if line else None

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()  # only the child this object started
            proc.wait()

    def __call__(self, prediction: str, reference: str) -> bool | None:
        with self.lock:
            if self.failures >= 3:
                return None
            if (self.proc is None or self.proc.poll() is not None) and not self._start():
                return None
            try:
                self.proc.stdin.write(json.dumps({"p": prediction, "r": reference}) + "\n")  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
                line = self._readline(self.timeout_s)
                return json.loads(line)["v"] if line else self._overran()
            except (OSError, ValueError, KeyError, TypeError):
                return self._overran()

    def _overran(self) -> None:
        self.stop()
        return None


def _serve_command() -> list[str]:
    """The child's command line. It imports this module from the checkout the parent runs (Ray
    workers and pytest may find it through sys.path alone), named on its own command line, so the
    child's environment is the parent's, unchanged."""
    root = str(Path(__file__).resolve().parents[2])
    code = f"import sys; sys.path.insert(0, {root!r}); from {__name__} import serve; serve()"
    return [sys.executable, "-c", code]


def serve() -> None:
    """The child's loop: stray prints go to stderr, replies to the saved stdout."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    _load_math_verify()
    out.write("ready\n")
    for line in sys.stdin:
        req = json.loads(line)
        out.write(json.dumps({"v": _math_verify_direct(req["p"], req["r"], MATH_VERIFY_TIMEOUT_S)}) + "\n")


_worker: MathVerifyWorker | None = None


def _shared_worker() -> MathVerifyWorker:
    global _worker
    if _worker is None:
        # each request is at most 3 steps (parse, parse, verify), each bounded by its own alarm
        _worker = MathVerifyWorker(timeout_s=3 * MATH_VERIFY_TIMEOUT_S + 5)
        atexit.register(_worker.stop)
    return _worker


def math_verify_equivalent(prediction: str | None, reference: str | None) -> bool | None:
    """math_verify's verdict on an extracted answer against the reference: True/False, or None when
    it has none (not installed, an error or timeout, an unsafe input, a side it cannot parse)."""
    if prediction is None or reference is None or not HAVE_MATH_VERIFY:
        return None
    p, r = _mv_prepare(prediction), _mv_prepare(reference)
    if p is None or r is None:
        return None
    if re.fullmatch(r"[-+]?\d+", p) and re.fullmatch(r"[-+]?\d+", r):
        return int(p) == int(r)  # plain integers (most items): the same verdict, without sympy
    if threading.current_thread() is threading.main_thread():
        return _math_verify_direct(p, r, MATH_VERIFY_TIMEOUT_S)
    return _shared_worker()(p, r)


