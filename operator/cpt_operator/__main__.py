"""`python -m cpt_operator [--verbose] [--liveness=http://0.0.0.0:8080/healthz]`: run the operator.

Same as `kopf run -m cpt_operator.kube.kopf_adapter` plus our settings. Namespaces come from CPT_NAMESPACES (empty = all
namespaces); always standalone (one replica, no kopf peering). kopf itself is only imported by `kube.kopf_adapter`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cpt_operator.kube.settings import Settings, SettingsError


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cpt_operator")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.add_argument("--liveness", default=None, metavar="URL",
                        help="serve kopf's liveness probe here, e.g. http://0.0.0.0:8080/healthz")
    return parser.parse_args(argv)


M_ARENA_MAX = -8  # glibc mallopt parameter
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core); with the pass threads,
    kopf's and the clients', freed memory then sits in many arenas and the RSS grows. Two arenas, set before
    any thread starts (what MALLOC_ARENA_MAX=2 does for many Python services). False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    limit_malloc_arenas()
    try:
        cfg = Settings.from_env()
    except SettingsError as exc:
        print(f"cpt-operator: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from cpt_operator.kube.kopf_adapter import run_operator

    run_operator(cfg, liveness_endpoint=args.liveness)
    return 0


if __name__ == "__main__":
    sys.exit(main())
