"""`cpt`: validate, plan, run locally, show status, print the CRD, start the operator.

Heavy imports (kopf, the local executor) happen inside the subcommands, so `cpt validate` stays fast and the
CLI never pulls torch into the operator's process.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

import yaml

EXIT_INVALID = 2


def _load_documents(path: str) -> list:
    from cpt_core.resource_file import read_documents
    from cpt_core.validation import SpecError

    try:
        return read_documents(path)
    except SpecError as exc:
        raise SystemExit("error: " + "; ".join(exc.problems)) from None


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate every document; without --mode, s3:// storage means a cluster run and anything else a local one."""
    from cpt_core.validation import SpecError, validate_resource

    failed = False
    for path in args.files:
        for doc in _load_documents(path):
            meta = doc.get("metadata") if isinstance(doc, dict) else None
            name = (meta or {}).get("name", "?") if isinstance(meta, dict) else "?"
            mode = args.mode or _guess_mode(doc)
            try:
                validate_resource(doc, mode=mode)
            except SpecError as exc:
                failed = True
                print(f"{path}: {name}: {exc}", file=sys.stderr)
            else:
                print(f"{path}: {name}: valid ({mode} run)")
    return EXIT_INVALID if failed else 0


def _guess_mode(doc: object) -> str:
    spec = doc.get("spec") if isinstance(doc, dict) else None
    storage = spec.get("storage") if isinstance(spec, dict) else None
    uri = storage.get("uri", "") if isinstance(storage, dict) else ""
    return "cluster" if str(uri).startswith("s3://") else "local"


def cmd_plan(args: argparse.Namespace) -> int:
    from cpt_core.validation import SpecError, validate_resource
    from cpt_operator.kube.children import render
    from cpt_operator.kube.defaults import PlanDefaults
    from cpt_operator.kube.settings import SettingsError, job_backend
    from cpt_operator.planner import Observed, plan

    try:
        args.job_backend = args.job_backend or job_backend()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    out = []
    for doc in _load_documents(args.file):
        try:
            validate_resource(doc, mode=args.mode)
        except SpecError as exc:
            print(f"{args.file}: {exc}", file=sys.stderr)
            return EXIT_INVALID
        doc.setdefault("metadata", {}).setdefault("namespace", args.namespace)
        try:
            committed = _committed_for(doc) if args.storage else {}
        except Exception as exc:  # noqa: BLE001 - storage down, no credentials: one line, never a traceback
            from cpt_core.storage import scrub

            print(f"{args.file}: cannot read committed tasks from {doc['spec']['storage']['uri']}: "
                  f"{scrub(str(exc))[:500]}", file=sys.stderr)
            return 1
        result = plan(doc, Observed(now=datetime.now(timezone.utc), committed=committed), mode=args.mode)
        out.extend(render(result, doc, (), PlanDefaults(job_backend=args.job_backend)).create)
        if args.show_status:
            print("# status: " + yaml.safe_dump(result.status, sort_keys=False).replace("\n", "\n# "),
                  file=sys.stderr)
    sys.stdout.write(yaml.safe_dump_all(out, sort_keys=False))
    return 0


def _committed_for(doc: dict) -> dict:
    """Committed results of the run from its storage (for `cpt plan --storage`)."""
    from cpt_core.api import CptSpec
    from cpt_core.storage import load_committed, open_store_for_spec

    return load_committed(open_store_for_spec(CptSpec.model_validate(doc["spec"]).storage))


def cmd_crd(args: argparse.Namespace) -> int:
    from cpt_operator.kube.crdgen import render

    sys.stdout.write(render())
    return 0


def cmd_settings(args: argparse.Namespace) -> int:
    """The operator's settings table (kube/settings_table.py), as docs/operator.md embeds it."""
    from cpt_operator.kube.settings_table import TABLE, markdown

    if args.markdown:
        sys.stdout.write(markdown())
    else:
        for row in TABLE:
            print(f"{row.env}={row.default}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from cpt_operator.local.runner import run_file

    return run_file(args.file, workdir=args.workdir, metrics_port=args.metrics_port)


def cmd_status(args: argparse.Namespace) -> int:
    from cpt_operator.local.status import print_status

    return print_status(args.target)


def cmd_operator(args: argparse.Namespace) -> int:
    from cpt_operator.__main__ import main as operator_main

    return operator_main(args.kopf_args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cpt", description="Continual post-training of language models.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check ContinualPostTraining files; exit 2 with named errors if invalid")
    p.add_argument("files", nargs="+")
    p.add_argument("--mode", choices=["cluster", "local"], default=None,
                   help="cluster requires s3:// storage; default: local if storage.uri is not s3://")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="print the children the operator would create now (like `helm template`)")
    p.add_argument("file")
    p.add_argument("--namespace", "-n", default="default")
    p.add_argument("--mode", choices=["cluster", "local"], default="cluster")
    p.add_argument("--storage", action="store_true", help="read committed tasks from the run's storage first")
    p.add_argument("--job-backend", choices=["pytorchjob", "trainjob"], default=None,
                   help="stage jobs as PyTorchJobs or Trainer v2 TrainJobs (default: CPT_JOB_BACKEND, else pytorchjob)")
    p.add_argument("--show-status", action="store_true", help="also print the status the plan implies (stderr)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("run", help="run the whole continual post-training on this machine")
    p.add_argument("file")
    p.add_argument("--workdir", default=None,
                   help="stage configs, logs and live status (default: <storage>/.cpt-local, or .cpt/<name> for s3)")
    p.add_argument("--metrics-port", type=int, default=9464,
                   help="serve Prometheus metrics on 127.0.0.1 here (0: any free port, -1: off)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="print the report of a local run (finished or in progress)")
    p.add_argument("target", help="the run's storage directory or its ContinualPostTraining file")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("crd", help="print the CustomResourceDefinition generated from the API models")
    p.set_defaults(func=cmd_crd)

    p = sub.add_parser("settings", help="print the operator's settings (env variables) with their defaults")
    p.add_argument("--markdown", action="store_true", help="the table docs/operator.md embeds")
    p.set_defaults(func=cmd_settings)

    p = sub.add_parser("operator", help="start the kopf operator (same as `python -m cpt_operator`)")
    p.add_argument("kopf_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_operator)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
