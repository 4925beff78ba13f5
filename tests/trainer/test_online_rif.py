"""Online RIF (issue 27): GRPO's own groups decide what to skip (GRESO's rule), batches stay full, a prompt can
come back, a resumed run continues with the same per-prompt records and makes the same decisions."""

import json
from pathlib import Path

from cpt_core.api import GrpoSpec, RifSpec
from cpt_core.rewards import load_reward
from cpt_core.tasks import Task
from cpt_trainer import synthetic
from cpt_trainer.learners.grpo import train_grpo
from cpt_trainer.learners.online_rif import CARRIED_KEY, OnlineRif
from cpt_trainer.stages import load_model

TINY = str(Path(__file__).resolve().parents[2] / "examples" / "models" / "tiny-base")


def _run(online: OnlineRif, zero_rows: set, stop_after_batches=None) -> list[list[int]]:
    """Drive the stream like the Trainer: batches of `batch` prompts, each observed as soon as it is trained;
    rows in zero_rows always get equal rewards, the others not. Batches a resumed stream replays are not
    observed again (the Trainer skips them)."""
    batches, batch = [], []
    replayed = len(online.consumed) // online.batch
    for row in online.stream():
        batch.append(row)
        if len(batch) == online.batch:
            b = len(batches)
            if b < replayed:
                batches.append(batch)
                batch = []
                continue
            rows = [r for r in batch for _ in range(2)]
            rewards = [1.0 if r in zero_rows else float(k % 2) for k, r in enumerate(rows)]
            online.observe(rows, rewards, 2, b, [x > 0.5 for x in rewards])
            batches.append(batch)
            batch = []
            if stop_after_batches is not None and len(batches) == stop_after_batches:
                break
    # a last partial batch (if any) is what the sampler drops
    return batches


def test_zero_variance_prompt_is_skipped_later_and_can_return():
    online = OnlineRif(8, 4, 6, seed=3, reprobe=0.5, floor=0.01)
    batches = _run(online, zero_rows={0, 1})
    flat = [r for b in batches for r in b]
    assert all(len(b) == 4 for b in batches)  # every step a full batch
    assert sorted(flat[:8]) == list(range(8))  # epoch 0: every prompt once (a first visit is never skipped)
    assert flat.count(0) < 6 and flat.count(2) in (5, 6)  # informative prompts every epoch (a partial batch dropped)
    stats = online.stats(group=2)
    assert stats["skipped_groups"] > 0 and stats["rollouts_saved"] == 2 * (6 * 8 - len(flat)) > 0
    assert stats["dropped"] == 2 and stats["kept"] == 6 and stats["filtered_fraction"] == 0.25
    assert len(batches) < 6 * 2  # fewer steps than GRPO's 6 epochs x 2
    # the decision rule itself: after z zero-variance visits a prompt is taken with probability max(p^z, floor)
    assert online.take_probability(0) == 1 and online.take_probability(2) == 0.25
    assert online.take_probability(10) == 0.01
    # a re-probed prompt whose group has variance again returns for good (its streak is 0)
    back = OnlineRif(8, 4, 40, seed=3, reprobe=0.5, floor=0.01)
    zero = {0}
    for b_idx, batch in enumerate(_iter_batches(back)):
        rows = [r for r in batch for _ in range(2)]
        if b_idx >= 2:
            zero = set()  # from the third batch on, prompt 0 is informative again
        rewards = [1.0 if r in zero else float(k % 2) for k, r in enumerate(rows)]
        back.observe(rows, rewards, 2, b_idx, [x > 0.5 for x in rewards])
    stats = back.stats(group=2)
    assert stats["returned_prompts"] == 1 and stats["reprobed_groups"] >= 1 and stats["dropped"] == 0


def _iter_batches(online):
    batch = []
    for row in online.stream():
        batch.append(row)
        if len(batch) == online.batch:
            yield batch
            batch = []


def test_a_resumed_stream_keeps_the_records_and_the_decisions():
    whole = OnlineRif(12, 4, 5, seed=7, reprobe=0.5, floor=0.01)
    expected = _run(whole, zero_rows={1, 4, 9})
    first = OnlineRif(12, 4, 5, seed=7, reprobe=0.5, floor=0.01)
    done = _run(first, zero_rows={1, 4, 9}, stop_after_batches=7)
    state = json.loads(json.dumps(first.snapshot()))  # what a step checkpoint carries
    resumed = OnlineRif(12, 4, 5, seed=7, reprobe=0.5, floor=0.01, state=state)
    assert resumed.history == first.history
    replayed = list(resumed.stream())[:7 * 4]  # the Trainer skips these batches on resume
    assert replayed == [r for b in done for r in b]
    rest = _run(OnlineRif(12, 4, 5, seed=7, reprobe=0.5, floor=0.01, state=state), zero_rows={1, 4, 9})
    assert rest == expected  # replayed batches then the same decisions as the run never stopped
    assert resumed.stats(2)["total"] == 12


def test_online_grpo_on_the_tiny_model_skips_mastered_prompts_and_keeps_steps_full(tmp_path):
    """copy is mastered by the shipped tiny base: its groups are mostly all-correct, so later epochs skip them."""
    model, tok = load_model(TINY)
    task = Task("copy", synthetic.generate("copy", 8, seed=0, pool="train"), load_reward("exact"))
    grpo = GrpoSpec(group_size=4, learning_rate=1e-4, prompts_per_step=4, epochs=3, max_completion_tokens=12,
                    temperature=0.7)
    carried: dict = {}
    stats, trainer = train_grpo(model, tok, [task], str(tmp_path), grpo, seed=0, quiet=True, carried=carried,
                                online=RifSpec(mode="online"))
    online = stats["online_rif"]
    assert online["zero_variance_groups"] > 0 and online["skipped_groups"] > 0, online
    assert stats["steps"] < 3 * 2 and online["groups"] == stats["steps"] * 4  # every step a full batch of 4
    assert online["rollouts_saved"] == (3 * 2 - stats["steps"]) * 4 * 4  # groups GRPO would have sampled
    assert carried[CARRIED_KEY]["consumed"] and len(carried[CARRIED_KEY]["consumed"]) == stats["steps"] * 4
