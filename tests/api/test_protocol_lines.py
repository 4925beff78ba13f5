"""A stage's protocol lines stay whole when several threads emit at once (cpt_core.protocol.emit).

A train stage reports each step from the Trainer's thread and each committed step checkpoint from its upload
thread; a fresh-clone CI run once read `CPT_PROGRESS {step 7}CPT_PROGRESS {checkpoint 6}` as one line, because
print() writes a line's text and its newline in two calls. Real stdout of a separate process, read as the local
executor and pod logs read it.
"""

import subprocess
import sys
import textwrap

from cpt_core import protocol

THREADS, LINES = 6, 3000


def test_lines_from_many_threads_each_parse():
    code = textwrap.dedent(f"""
        import sys, threading
        sys.setswitchinterval(1e-6)  # switch threads as often as possible: a split write would show
        from cpt_core import protocol

        def work(t):
            for i in range({LINES}):
                protocol.progress("train", 1, i, {LINES}, reward=0.5, loss=0.25, thread=t)

        threads = [threading.Thread(target=work, args=(t,)) for t in range({THREADS})]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == THREADS * LINES
    parsed = [protocol.parse(line) for line in lines]
    bad = [line for line, p in zip(lines, parsed) if p is None or not p[1]]
    assert not bad, bad[:3]
    seen = {(p[1]["thread"], p[1]["step"]) for p in parsed}
    assert len(seen) == THREADS * LINES  # every line arrived once, none merged into another
