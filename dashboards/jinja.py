"""The one Jinja2 configuration of the dashboards: templates from `dashboards/templates/`,
every value autoescaped unless it is `markupsafe.Markup`, an undefined name an error.

`dashboards.templating` gives it to aiohttp-jinja2 for pages rendered with a request; `ENV`
renders where there is none (the page frame of `dashboards.pages`, the CLI's report file).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2


def options() -> dict[str, Any]:
    return {
        "loader": jinja2.PackageLoader("dashboards", "templates"),
        "autoescape": True,
        "undefined": jinja2.StrictUndefined,
    }


ENV = jinja2.Environment(**options())


def render(name: str, context: Mapping[str, object]) -> str:
    return ENV.get_template(name).render(context)
