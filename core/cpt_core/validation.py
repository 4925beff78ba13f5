"""Validation of a ContinualPostTraining with errors that name the field and the rule.

The same function runs in `cpt validate`, `cpt plan`, `cpt run` and the operator's planner, so a spec that
passes here never crashes the operator. Schema-level rules come from the pydantic models (`api`); rules that
span fields live below.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Iterable, Literal, Optional

from pydantic import BaseModel, ValidationError

from cpt_core import api, tenancy

Mode = Literal["cluster", "local"]


class SpecError(ValueError):
    """A resource that cannot be trained; `problems` holds one line per broken rule."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid ContinualPostTraining:\n" + "\n".join(f"  - {p}" for p in problems))


def validate_resource(obj: Any, mode: Mode = "cluster",
                      policy: Optional[tenancy.TenantPolicy] = None) -> api.ContinualPostTraining:
    """Parse and check a whole resource; raise SpecError listing every problem found. On a cluster the
    admin's policy is `policy`, else the one in the environment (tenancy.TenantPolicy.from_env)."""
    if not isinstance(obj, dict):
        raise SpecError([f"the document must be a mapping (a Kubernetes object), got {type(obj).__name__}"])
    raw = list(raw_problems(obj.get("spec"))) + list(tenancy.raw_int_problems(obj.get("spec")))
    try:
        resource = api.ContinualPostTraining.model_validate(_without_status(obj))
    except ValidationError as exc:
        raise SpecError(_describe(exc, api.ContinualPostTraining) + raw) from None
    if mode == "cluster" and policy is None:
        policy = tenancy.TenantPolicy.from_env()
    problems = raw + list(cross_field_problems(resource.spec, mode)) + list(tenancy.problems(resource, mode, policy))
    if problems:
        raise SpecError(problems)
    return resource


def raw_problems(spec: Any) -> Iterable[str]:
    """Cross-field rules checked on the raw document, so they are reported beside schema errors."""
    if not isinstance(spec, dict):
        return
    for key, rule in (("tasks", "task names must be unique"), ("general", "benchmark names must be unique")):
        items = spec.get(key)
        if isinstance(items, list):
            names = [i.get("name") if isinstance(i, dict) else None for i in items]
            yield from _duplicates(f"spec.{key}", [n for n in names if isinstance(n, str)], rule)
    method = spec.get("method", api.CptSpec.field_default("method"))
    if spec.get("rif") is not None and method not in api.SAMPLING_METHODS:
        yield (f"spec.rif: a rif block is only allowed with method rif-grpo or self-sft (method is {method}); "
               "remove it or set method: rif-grpo")


def cross_field_problems(spec: api.CptSpec, mode: Mode) -> Iterable[str]:
    """Rules a structural schema cannot express (those that need parsed values)."""
    rif = spec.rif_effective
    if rif is not None and rif.min_correct > rif.rollouts:
        yield (f"spec.rif.minCorrect: must be <= spec.rif.rollouts ({rif.min_correct} > {rif.rollouts}); "
               "no prompt could ever be kept")
    if rif is not None and spec.method == "self-sft" and rif.mode == "online":
        yield ("spec.rif.mode: online is for rif-grpo (GRPO's own groups decide what to skip); self-sft trains on "
               "the filter stage's correct rollouts, so it needs mode: prefilter")
    yield from replay_problems(spec)
    if rif is not None and rif.reprobe_floor > rif.reprobe:
        yield (f"spec.rif.reprobeFloor: must be <= spec.rif.reprobe ({rif.reprobe_floor} > {rif.reprobe}); the "
               "re-probe probability starts at reprobe and decays towards the floor")
    if spec.tracking is not None and spec.tracking.mlflow is None and spec.tracking.wandb is None:
        yield "spec.tracking: name a backend (mlflow: {trackingUri: ...} or wandb: {project: ...}) or leave it out"
    if spec.rollout.gpus and spec.rollout.tensor_parallel > spec.rollout.gpus:
        yield (f"spec.rollout.tensorParallel: must be <= spec.rollout.gpus "
               f"({spec.rollout.tensor_parallel} > {spec.rollout.gpus})")
    if spec.evaluation.every_steps and spec.evaluation.engine == "vllm":
        yield ("spec.evaluation.everySteps: curve points are scored with hf inside the learner, so with "
               "evaluation.engine vllm the curve and the matrix rows would come from two engines; set "
               "evaluation.engine: hf, or remove everySteps")
    if mode == "cluster":
        completions = spec.grpo.prompts_per_step * spec.grpo.group_size
        if spec.method not in api.SFT_METHODS and completions % spec.learner.world_size:
            # The learner splits each step's completions evenly over its ranks (cpt_trainer.learners.grpo): a
            # remainder would fail in every GPU pod and be retried, so it is refused here.
            yield (f"spec.grpo.promptsPerStep: promptsPerStep x groupSize ({spec.grpo.prompts_per_step} x "
                   f"{spec.grpo.group_size} = {completions}) must divide by the learner's world size, "
                   f"spec.learner.replicas x processes per replica (gpusPerReplica, 1 without GPUs): "
                   f"{spec.learner.replicas} x {spec.learner.processes_per_replica} = {spec.learner.world_size}")
        if not spec.storage.uri.startswith("s3://"):
            yield (f"spec.storage.uri: must be an s3:// URI on a cluster (got {spec.storage.uri!r}); "
                   "local paths only work with `cpt run`")
    elif spec.storage.secret_ref:
        yield "spec.storage.secretRef: Secrets only exist on a cluster; locally use the AWS_* environment variables"
    if mode != "cluster" and spec.tracking is not None:
        for path, ref, variables in (("mlflow", spec.tracking.mlflow, "MLFLOW_TRACKING_*"),
                                     ("wandb", spec.tracking.wandb, "WANDB_API_KEY")):
            if ref is not None and ref.secret_ref:
                yield (f"spec.tracking.{path}.secretRef: Secrets only exist on a cluster; locally `cpt run` passes "
                       f"the {variables} environment variables on to the stages")
    for i, task in enumerate(spec.tasks):
        yield from _regex_problem(f"spec.tasks[{i}].answerPattern", task.answer_pattern)
    for i, bench in enumerate(spec.general):
        yield from _regex_problem(f"spec.general[{i}].answerPattern", bench.answer_pattern)


def _regex_problem(path: str, pattern: str | None) -> Iterable[str]:
    import re

    if pattern is None:
        return
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        yield f"{path}: not a valid regular expression ({exc})"
        return
    except (OverflowError, RecursionError, MemoryError, ValueError) as exc:  # re.compile raises these too
        what = {"RecursionError": "nested too deeply"}.get(type(exc).__name__, str(exc))
        yield f"{path}: not a usable regular expression ({what})"
        return
    if compiled.groups < 1:
        yield f"{path}: needs one capture group that holds the answer (got {pattern!r})"


def _duplicates(path: str, names: list[str], rule: str) -> Iterable[str]:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            yield f"{path}[{i}].name: duplicate name {name!r} (also {path}[{seen[name]}]); {rule}"
        else:
            seen[name] = i


def _without_status(obj: dict) -> dict:
    """Status is written by the operator, never validated as user input."""
    return {k: v for k, v in obj.items() if k != "status"}


def _describe(exc: ValidationError, root: type[BaseModel]) -> list[str]:
    """Turn pydantic errors into `path: rule (got value)` lines with camelCase paths and suggestions."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        path = _path(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            field = str(loc[-1])
            known = _known_fields(root, loc[:-1])
            hint = difflib.get_close_matches(field, known, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else (f"; known fields: {', '.join(known)}" if known else "")
            lines.append(f"{path}: unknown field {field!r}{suggestion}")
        elif kind == "missing":
            lines.append(f"{path}: required field is missing")
        elif kind == "string_pattern_mismatch":
            got = re.sub(r"(://)[^/@\s]*@", r"\1***@", str(err.get("input")))  # never echo a URL's password
            lines.append(f"{path}: {_pattern_rule(loc, err.get('input'))} (got {got!r})")
        elif kind == "literal_error":  # "Input should be 'ContinualPostTraining'": the value keeps its case
            msg = err["msg"]
            lines.append(f"{path}: {msg[:1].lower() + msg[1:]} (got {err.get('input')!r})")
        else:
            lines.append(f"{path}: {err['msg']} (got {err.get('input')!r})")
    return lines


def _pattern_rule(loc: tuple, value: Any = None) -> str:
    last = str(loc[-1])
    if isinstance(value, str) and value.startswith("s3://"):
        return "must be s3://bucket/key with a valid bucket name (3-63 lowercase letters, digits, '.' or '-')"
    if last == "name":
        return "must be a DNS label: lowercase letters, digits and '-', starting and ending with a letter or digit"
    if last in ("train", "eval", "model", "uri"):
        return "must be a URI: s3://bucket/key, file:///absolute/path or a local path"
    if last == "reward":
        return "must be a built-in reward name (exact, numeric, choice) or module:function"
    if last == "endpoint":
        return "must be an http:// or https:// URL"
    return "does not match the required format"


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + _camel(str(part))
    return out or "<root>"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _known_fields(root: type[BaseModel], loc: tuple) -> list[str]:
    """The wire names of the model found at `loc`, for 'did you mean' hints."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = _field_by_wire_name(model, str(part))
        if field is None:
            return []
        model = _inner_model(field.annotation)
        if model is None:
            return []
    return sorted(f.alias or n for n, f in model.model_fields.items())


def _field_by_wire_name(model: Any, name: str):
    for field_name, field in getattr(model, "model_fields", {}).items():
        if name in (field_name, field.alias):
            return field
    return None


def _inner_model(annotation: Any):
    """The BaseModel inside Optional[...] / list[...] annotations, if any."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def replay_slots(fraction: float, batch: int) -> int:
    """Prompt slots of a batch of `batch` given to replayed prompts (round half up)."""
    return int(fraction * batch + 0.5)


def replay_problems(spec: api.CptSpec) -> Iterable[str]:
    """A replay fraction must give at least one slot of a batch to replay and leave at least one to the task."""
    f = spec.replay.fraction
    if not f:
        return
    name, batch = (("sft.batchSize", spec.sft.batch_size) if spec.method in api.SFT_METHODS
                   else ("grpo.promptsPerStep", spec.grpo.prompts_per_step))
    slots = replay_slots(f, batch)
    if slots < 1:
        yield (f"spec.replay.fraction: {f} of spec.{name} {batch} rounds to 0 replayed prompts per batch; raise it "
               f"to at least {0.5 / batch:.3g} or set 0 (off)")
    elif slots >= batch:
        yield (f"spec.replay.fraction: {f} of spec.{name} {batch} leaves no slot of a batch for the task's own "
               "prompts; lower it")

