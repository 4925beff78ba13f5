"""Chart test fixtures: the chart loaded once, and a render helper that returns objects."""

from __future__ import annotations

import pytest
import yaml
from chart_common import CHART_DIR, NAMESPACE, RELEASE, helm


@pytest.fixture(scope="session")
def chart():
    with helm.Chart.load(str(CHART_DIR)) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart):
    """render(values) -> list of objects (NOTES.txt and empty documents left out)."""
    cache: dict[str, list[dict]] = {}

    def _render(values: dict | None = None, namespace: str = NAMESPACE) -> list[dict]:
        key = yaml.safe_dump([values, namespace])
        if key not in cache:
            manifests = chart.render(values or {}, name=RELEASE, namespace=namespace)
            objects = []
            for path, text in sorted(manifests.items()):
                if not path.endswith((".yaml", ".yml")):
                    continue
                objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
            cache[key] = objects
        return cache[key]

    return _render
