"""Rendering the report template, shipped as package data, with autoescaping on."""

from __future__ import annotations

import functools
from typing import Any

import jinja2

TEMPLATE = "report.html.j2"


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """Return the Jinja2 environment that loads ``robustdc/report/templates``.

    Autoescaping is on for every template, whatever its suffix, so any text from a
    results table is escaped. Undefined names raise instead of rendering as empty text.
    """
    return jinja2.Environment(
        loader=jinja2.PackageLoader("robustdc.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_html(context: dict[str, Any]) -> str:
    """Render the report template with ``context`` and return the HTML text."""
    return environment().get_template(TEMPLATE).render(**context)
