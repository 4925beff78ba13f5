"""`python -m cpt_operator`: run the operator (same as `kopf run -m cpt_operator.handlers` plus our settings).

Namespaces come from CPT_NAMESPACES (empty = all namespaces); peering from CPT_PEERING (empty = standalone).
"""

from __future__ import annotations

import logging
import sys

import kopf

from .settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = Settings.from_env()
    except SettingsError as exc:
        print(f"cpt-operator: {exc}", file=sys.stderr)
        return 2
    verbose = "--verbose" in (argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from . import handlers  # noqa: F401  (registers the handlers with kopf's default registry)

    kopf.run(
        clusterwide=not cfg.namespaces,
        namespaces=list(cfg.namespaces),
        standalone=cfg.peering is None,
        peering_name=cfg.peering,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
