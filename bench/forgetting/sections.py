"""The one RESULTS.md writer: every protocol's section is replaced on its own, every other section kept byte for
byte. Two kinds of section: v1's part (the top of the file) and v2's (from its heading to the next section), which
predate markers; v3, the pilot and v4 sit between their own begin/end markers. Plus the number formats every
section uses."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

V2_HEADING = "## Protocol v2 (lr 1e-4)"  # RESULTS.md: v2's section runs from this heading to the next section
MARK = {"v3": ("<!-- protocol-v3:begin -->", "<!-- protocol-v3:end -->"),
        "pilot": ("<!-- pilot:begin -->", "<!-- pilot:end -->"),
        "pilot-cuda": ("<!-- pilot-cuda:begin -->", "<!-- pilot-cuda:end -->"),
        "v4": ("<!-- protocol-v4:begin -->", "<!-- protocol-v4:end -->")}


def f(x, d: int = 3, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.{d}f}" if signed else f"{x:.{d}f}"


def ci_text(ci: dict, d: int = 3, signed: bool = True) -> str:
    if ci["mean"] is None:
        return "n/a"
    if ci["lo"] is None:
        return f"{f(ci['mean'], d, signed)} (one value)"
    return f"{f(ci['mean'], d, signed)} [{f(ci['lo'], d, signed)}, {f(ci['hi'], d, signed)}]"


def section_starts() -> list[str]:
    """The lines that begin RESULTS.md's sections after v1's part, in the file's order: v2's heading, then the
    begin markers of v3doc's sections (v3, pilot, pilot-cuda). A section runs from its line to the next of these."""
    return [V2_HEADING] + [begin for begin, _ in MARK.values()]


def _line_index(text: str, line: str) -> Optional[int]:
    if text.startswith(line):
        return 0
    i = text.find("\n" + line)
    return None if i < 0 else i + 1


def splice(text: str, doc: str, start: Optional[str] = None) -> str:
    """RESULTS.md's text with one section replaced by doc, every other section kept byte for byte. start None:
    v1's part (the top of the file, up to the first other section); else the section beginning with the line
    start (one of section_starts()), up to the next section or the end. A section not there yet is inserted
    before the first section that follows it in section_starts()'s order, else appended."""
    starts = section_starts()
    found = {s: i for s in starts if (i := _line_index(text, s)) is not None}
    if start is None:
        b, e = 0, min(found.values(), default=len(text))
    elif start in found:
        b = found[start]
        e = min((i for i in found.values() if i > b), default=len(text))
    else:
        b = e = min((found[s] for s in starts[starts.index(start) + 1:] if s in found), default=len(text))
    head, tail = text[:b].rstrip("\n"), text[e:]
    return (head + "\n\n" if head else "") + (doc.rstrip("\n") + "\n\n" + tail if tail else doc)



def marked(text: str, key: str) -> Optional[str]:
    """The body of a marker section as it stands in text (None when absent)."""
    begin, end = MARK[key]
    if begin not in text or end not in text:
        return None
    return text[text.index(begin) + len(begin) + 1:text.index(end)]


# Lines that say when and where a report was written, not what it found: a report whose other lines are the same
# as the section already there leaves that section as it is, so `--report-only` over unchanged records rewrites
# nothing (byte for byte) instead of restamping the date and the load average.
STAMPS = ("Written: ", "Machine: ")


def same_findings(old: str, new: str) -> bool:
    def strip(text):
        return [ln for ln in text.rstrip().splitlines() if not ln.startswith(STAMPS)]
    return strip(old) == strip(new)


def write_marked(key: str, body: str, results: Path) -> None:
    """Replace (or append) the section between key's markers; kept as it is when only its stamps would change."""
    begin, end = MARK[key]
    text = results.read_text() if results.is_file() else ""
    old = marked(text, key)
    if old is not None and same_findings(old, body):
        return
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end) + 1:]
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(text)
