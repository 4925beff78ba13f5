"""bench/forgetting's RESULTS.md holds one section per protocol (v1's part, v2, v3, the pilot): writing one
protocol's section never deletes or changes another's. Pure and fast: nothing is trained."""

from pathlib import Path

import pytest

import sections as results_doc
import v12

ROOT = Path(__file__).resolve().parents[2]
FORGETTING = ROOT / "bench" / "forgetting"


V1 = "# bench/forgetting: SFT vs GRPO\n\n## Protocol (fixed)\n\nold v1 table\n"
V2 = results_doc.V2_HEADING + "\n\nold v2 table\n"
V3 = "{}\n## Protocol v3 (tiny char model)\n\nv3 body\n{}\n".format(*results_doc.MARK["v3"])
PILOT = "{}\n## Pilot: SmolLM2-135M-Instruct\n\npilot body\n{}\n".format(*results_doc.MARK["pilot"])
FULL = V1 + "\n" + V2 + "\n" + V3 + "\n" + PILOT


def test_splice_replaces_only_its_own_section():
    new_v2 = results_doc.V2_HEADING + "\n\nnew v2 table\n"
    assert results_doc.splice(FULL, new_v2, results_doc.V2_HEADING) == FULL.replace(V2, new_v2)
    new_v1 = "# bench/forgetting: SFT vs GRPO\n\nnew v1 table\n"
    assert results_doc.splice(FULL, new_v1) == FULL.replace(V1, new_v1)
    assert results_doc.splice(FULL, V2, results_doc.V2_HEADING) == FULL  # rewriting a section as it is: no change


def test_splice_inserts_a_missing_section_in_protocol_order():
    without_v2 = V1 + "\n" + V3 + "\n" + PILOT
    assert results_doc.splice(without_v2, V2, results_doc.V2_HEADING) == FULL
    assert results_doc.splice(V1, V2, results_doc.V2_HEADING) == V1 + "\n" + V2
    assert results_doc.splice("", V2, results_doc.V2_HEADING) == V2
    assert results_doc.splice(V3 + "\n" + PILOT, V1) == FULL.replace(V2 + "\n", "")  # v1 first


@pytest.mark.parametrize("protocol", ["v1", "v2"])
@pytest.mark.parametrize("with_v2", [True, False])
def test_run_main_keeps_the_other_protocols_sections(tmp_path, monkeypatch, protocol, with_v2):
    """`run.py --protocol v2` (or v1) rewrites its own section only: v3's and the pilot's sections that follow
    it stay byte for byte (the runs are replaced by stubs)."""
    run = v12

    class FakeBench:
        def __init__(self, *a, **k):
            pass

        def run(self):
            return {}

    monkeypatch.setattr(run, "Bench", FakeBench)
    monkeypatch.setattr(run, "summarize", lambda out, p: {})
    monkeypatch.setattr(run, "render", lambda summary, p: "NEW TABLE\n")
    monkeypatch.setattr(run, "v2_section", lambda *a: results_doc.V2_HEADING + "\n\nNEW v2\n")
    monkeypatch.setattr(run, "describe", lambda p: "NEW v1 protocol")
    monkeypatch.setattr(run, "run_header", lambda *a: ["header"])
    monkeypatch.setattr(run, "render_matrices", lambda out, p: "matrices\n")
    monkeypatch.setattr(run.cb, "use_code", lambda rev, work: "stub")
    monkeypatch.setattr(run.cb, "machine", lambda: "stub")
    results = tmp_path / "RESULTS.md"
    results.write_text(FULL if with_v2 else FULL.replace(V2 + "\n", ""))
    import run as forgetting_run

    monkeypatch.setattr(forgetting_run.importlib, "import_module", lambda name: v12)
    assert forgetting_run.main(["--protocol", protocol, "--work", str(tmp_path / "w"), "--results", str(results)]) == 0
    text = results.read_text()
    assert text.endswith("\n" + V3 + "\n" + PILOT)  # v3 and the pilot untouched, last
    if protocol == "v2":
        assert text.startswith(V1 + "\n" + results_doc.V2_HEADING + "\n\nNEW v2\n\n" + V3)
    else:
        assert "NEW v1 protocol" in text and "old v1 table" not in text
        assert (V2 in text) == with_v2
