"""RESULTS.md's committed sections, byte for byte, through the one writer (sections.py).

What the repository holds: RESULTS.md itself and history/. The records the past sections were rendered from (the
run folders of v1/v2 under work/full, of v3 under work/v3 and of the pilot under work/pilot: report.json,
train.json, eval.json per run) live in ignored work/ folders that are not committed, so no test can re-render
those sections from records here; `run.py --protocol v3|pilot --report-only` does so where the work/ folders exist.
What is tested from committed data: every committed section, written back through the writer with fresh stamps
(the date and machine lines a report-only pass would produce), leaves RESULTS.md byte-identical, and replacing one
section never moves a byte of another."""

import re
from pathlib import Path

import pytest

import sections

ROOT = Path(__file__).resolve().parents[2]
FORGETTING = ROOT / "bench" / "forgetting"
TEXT = (FORGETTING / "RESULTS.md").read_text()


def test_the_committed_file_has_every_past_section():
    for key in ("v3", "pilot"):
        assert sections.marked(TEXT, key) is not None, key
    assert sections.V2_HEADING in TEXT and TEXT.startswith("# bench/forgetting")


@pytest.mark.parametrize("key", ["v3", "pilot"])
def test_report_only_over_unchanged_records_keeps_the_section_byte_for_byte(tmp_path, key):
    body = sections.marked(TEXT, key)
    restamped = re.sub(r"^Written: .*$", "Written: 2099-01-01 00:00 UTC by the runner.  ", body, flags=re.M)
    restamped = re.sub(r"^Machine: .*$", "Machine: another machine, load average at start 9.9", restamped,
                       flags=re.M)
    assert restamped != body
    results = tmp_path / "RESULTS.md"
    results.write_text(TEXT)
    sections.write_marked(key, restamped, results)
    assert results.read_bytes() == TEXT.encode()
    sections.write_marked(key, body.replace("Admission", "Admission (changed)", 1), results)  # a finding changed
    changed = results.read_text()
    assert changed != TEXT and changed.count("Admission (changed)") == 1
    other = "pilot" if key == "v3" else "v3"
    assert sections.marked(changed, other) == sections.marked(TEXT, other)


def test_v1_and_v2_parts_round_trip_through_splice():
    starts = {s: TEXT.index(s) for s in sections.section_starts() if s in TEXT}
    v2_start = starts[sections.V2_HEADING]
    v2_end = min(i for i in starts.values() if i > v2_start)
    v1 = TEXT[:v2_start].rstrip("\n") + "\n"
    v2 = TEXT[v2_start:v2_end].rstrip("\n") + "\n"
    assert sections.splice(TEXT, v1) == TEXT
    assert sections.splice(TEXT, v2, sections.V2_HEADING) == TEXT


def test_a_v4_section_goes_after_the_past_ones_and_leaves_them(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text(TEXT)
    sections.write_marked("v4", "## Protocol v4\n\nnot run\n", results)
    text = results.read_text()
    assert text.startswith(TEXT.rstrip("\n")) and sections.marked(text, "v4") == "## Protocol v4\n\nnot run\n"
