"""kube.admission's rules without a server: which events count for which job, and when the namespace is looked at."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cpt_operator.kube.controller.admission import MAX_GAP, AdmissionScanner, PendingJob, match_events, owner_job

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)


def _event(name, at, reason="FailedCreatePod", etype="Warning", uid=None, message="forbidden: quota exceeded"):
    return {"type": etype, "reason": reason, "message": message,
            "involvedObject": {"name": name, **({"uid": uid} if uid else {})},
            "lastTimestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ")}


def test_an_event_belongs_to_the_longest_job_name_it_extends():
    jobs = ["r-1-train", "r-1-train-r1"]
    assert owner_job("r-1-train-r1-node-0", jobs) == "r-1-train-r1"
    assert owner_job("r-1-train-node-0", jobs) == "r-1-train"
    assert owner_job("r-1-train", jobs) == "r-1-train"
    assert owner_job("r-1-trainer", jobs) is None


def test_only_newer_warnings_of_the_job_itself_count():
    job = PendingJob("r-1-train", "uid-1", T0)
    events = [_event("r-1-train", T0 - timedelta(minutes=5), message="an earlier job of this name"),
              _event("r-1-train", T0 + timedelta(seconds=5), etype="Normal"),
              _event("r-1-train", T0 + timedelta(seconds=5), reason="BackOff"),
              _event("r-1-train", T0 + timedelta(seconds=5), uid="uid-other", message="another object's"),
              _event("r-1-train-r1", T0 + timedelta(seconds=9), message="the retry's, not ours")]
    assert match_events(events, [job], ["r-1-train", "r-1-train-r1"]) == {}
    events.append(_event("r-1-train-node-0", T0 + timedelta(seconds=3), reason="FailedCreate", message="old news"))
    events.append(_event("r-1-train", T0 + timedelta(seconds=7), uid="uid-1",
                         message="pods \"w\" is forbidden:   violates\nPodSecurity"))
    assert match_events(events, [job], ["r-1-train", "r-1-train-r1"]) == {
        "r-1-train": 'pods "w" is forbidden: violates PodSecurity'}


def test_looks_wait_for_the_grace_then_back_off_and_share_one_listing():
    listings = []
    warnings = [_event("a-0-evaluate", T0 + timedelta(seconds=2))]

    def list_warnings(namespace):
        listings.append(namespace)
        return warnings

    scanner = AdmissionScanner(list_warnings, grace=30)
    a = PendingJob("a-0-evaluate", "ua", T0)
    b = PendingJob("b-0-evaluate", "ub", T0 + timedelta(seconds=5))
    assert scanner.note("ns", "a", [a], [a.name]) == {}
    assert scanner.note("ns", "b", [b], [b.name]) == {}
    assert scanner.sweep(T0 + timedelta(seconds=29)) == set() and listings == []
    assert scanner.sweep(T0 + timedelta(seconds=40)) == {("ns", "a")} and listings == ["ns"]  # both due: one LIST
    assert scanner.note("ns", "a", [a], [a.name]) == {a.name: "forbidden: quota exceeded"}
    assert scanner.next_look() == T0 + timedelta(seconds=100)  # the gap doubled: 30 -> 60
    gaps = []
    now = T0 + timedelta(seconds=100)
    for _ in range(8):
        scanner.sweep(now)
        step = (scanner.next_look() - now).total_seconds()
        gaps.append(step)
        now += timedelta(seconds=step)
    assert gaps[:3] == [120, 240, 480] and max(gaps) == MAX_GAP
    scanner.note("ns", "a", [], [a.name])  # the job runs now: forgotten, and its finding with it
    scanner.note("ns", "b", [], [b.name])
    assert scanner.next_look() is None


def test_one_listing_is_a_look_for_every_ripe_job_of_the_namespace():
    """Jobs created a few seconds apart are not each looked at on their own: the namespace's listing, due for the
    first of them, covers every job past its grace, and listings of one namespace are at least `spacing` apart."""
    listings = []
    scanner = AdmissionScanner(lambda ns: listings.append(ns) or [], grace=30)
    jobs = [PendingJob(f"r{i}-0-evaluate", f"u{i}", T0 + timedelta(seconds=i)) for i in range(20)]
    for job in jobs:
        scanner.note("ns", job.name[:3], [job], [job.name])
    scanner.sweep(T0 + timedelta(seconds=30))  # r0 is due; r1..r19 are not ripe yet
    assert listings == ["ns"] and scanner.next_look() == T0 + timedelta(seconds=40)  # spacing, not r1's 31 s
    scanner.sweep(T0 + timedelta(seconds=35))
    assert listings == ["ns"]  # too soon after the last listing
    scanner.sweep(T0 + timedelta(seconds=40))  # covers r1..r10, all ripe by now
    scanner.sweep(T0 + timedelta(seconds=50))  # covers r11..r19
    assert len(listings) == 3
    now = T0 + timedelta(seconds=50)
    for _ in range(12):  # from here the three groups' gaps double in step: few listings per hour
        now = scanner.next_look()
        scanner.sweep(now)
    assert now - T0 > timedelta(minutes=30) and len(listings) == 15


def test_a_failed_listing_concludes_nothing():
    def broken(namespace):
        raise ConnectionError("API server unreachable")

    scanner = AdmissionScanner(broken, grace=1)
    job = PendingJob("a-0-evaluate", "ua", T0)
    scanner.note("ns", "a", [job], [job.name])
    with pytest.raises(ConnectionError):
        scanner.sweep(T0 + timedelta(seconds=5))
    assert scanner.next_look() == T0 + timedelta(seconds=1)  # still due
    assert scanner.version("ns", "a") == 0
