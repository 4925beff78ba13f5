"""Keeping secrets out of logs and exception messages.

`scrub` replaces every registered secret in any text, and a log-record factory (installed once, chained to the
previous one) scrubs every log record of the process, botocore's debug logs included. Imports nothing else of the
storage package, so its errors can use it.

Two ways in: `register_secret(value)` for the process's own credentials (kept for the process's life), and
`hold_secrets(owner, values)` / `release_secrets(owner)` for credentials used on behalf of someone (the operator
holds a run's key id, secret and session token while it reads that run's storage, and lets go when the run is
forgotten; a value two runs use stays until both let go). Only values of at least MIN_SECRET_LEN characters are
kept: a short value would mask ordinary words in every other tenant's messages. Every form of every value is
matched by one compiled regular expression (a trie of the forms, rebuilt lazily after a change), so a log line
costs one scan whatever the number of secrets.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import traceback
from collections import Counter
from typing import Hashable, Iterable, Optional
from urllib.parse import quote, quote_plus

REDACTED = "***"
MIN_SECRET_LEN = 8  # shorter values are not secrets worth masking everywhere (and would mask common words)

_lock = threading.Lock()
_permanent: set[str] = set()  # values registered for the process's life
_held: dict[Hashable, frozenset[str]] = {}  # owner -> the values it holds
_counts: Counter[str] = Counter()  # value -> how many owners hold it
_matcher: Optional[re.Pattern[str]] = None
_dirty = False
_factory_installed = False


def encoded_forms(value: str) -> set[str]:
    """The forms a secret takes on its way into a URL, a header or a config dump: as is, percent-encoded (both
    styles), and base64 (standard and URL-safe, with and without padding)."""
    raw = value.encode()
    forms = {value, quote(value, safe=""), quote_plus(value, safe="")}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode()
        forms |= {text, text.rstrip("=")}
    return {f for f in forms if len(f) >= MIN_SECRET_LEN}


def _kept(values: Iterable[Optional[str]]) -> frozenset[str]:
    return frozenset(v for v in values if v and len(v) >= MIN_SECRET_LEN)


def register_secret(value: Optional[str]) -> None:
    """Remember one of the process's own secrets (in every encoded form) for the process's life."""
    global _dirty
    kept = _kept([value])
    if not kept:
        return
    with _lock:
        if value in _permanent:
            return
        _permanent.update(kept)
        _dirty = True
        _install_log_scrubber()


def hold_secrets(owner: Hashable, values: Iterable[Optional[str]]) -> None:
    """`owner` uses these values now (replacing what it held before): scrubbed until `release_secrets(owner)`."""
    global _dirty
    kept = _kept(values)
    with _lock:
        before = _held.get(owner, frozenset())
        if before == kept:
            return
        _counts.update(kept - before)
        _counts.subtract(before - kept)
        for value in before - kept:
            if _counts[value] <= 0:
                del _counts[value]
        if kept:
            _held[owner] = kept
        else:
            _held.pop(owner, None)
        _dirty = True
        _install_log_scrubber()


def release_secrets(owner: Hashable) -> None:
    """`owner` is gone: its values are no longer scrubbed unless another owner (or the process) holds them."""
    hold_secrets(owner, ())


def registered() -> int:
    """How many distinct values are scrubbed now (figures and tests)."""
    with _lock:
        return len(_permanent | set(_counts))


def scrub(text: str) -> str:
    """Replace every registered secret in `text`."""
    matcher = _current()
    return matcher.sub(REDACTED, text) if matcher is not None else text


def _current() -> Optional[re.Pattern[str]]:
    global _matcher, _dirty
    if not _dirty:
        return _matcher
    with _lock:
        if _dirty:
            forms: set[str] = set()
            for value in _permanent | set(_counts):
                forms |= encoded_forms(value)
            _matcher = re.compile(_trie_pattern(forms)) if forms else None
            _dirty = False
        return _matcher


def _trie_pattern(words: Iterable[str]) -> str:
    """One regular expression matching any of `words`, longest first, as a trie: at each position of a text the
    engine follows one branch per character instead of trying every word."""
    root: dict = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def walk(node: dict) -> str:
        branches = []
        for ch, sub in sorted(node.items()):
            if not ch:
                continue
            run = [ch]  # a chain of single children is one literal (no recursion per character: tokens are long)
            while len(sub) == 1 and "" not in sub:
                (ch, sub), = sub.items()
                run.append(ch)
            branches.append(re.escape("".join(run)) + walk(sub))
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        if "" in node:  # a word ends here: the longer ones are optional, tried first
            return f"(?:{body})?"
        return body

    return walk(root)


def _install_log_scrubber() -> None:
    """Once per process (called with _lock held)."""
    global _factory_installed
    if _factory_installed:
        return
    _factory_installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:  # type: ignore[no-untyped-def]
        record = previous(*args, **kwargs)
        if _current() is None:
            return record
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error handling
            return record
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:  # formatters reuse exc_text: pre-format it scrubbed
            record.exc_text = scrub("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        return record

    logging.setLogRecordFactory(factory)
