"""Jinja2 templates for the dashboard pages (aiohttp-jinja2), autoescaping everything.

Templates live in `dashboards/templates/` (installed as package data). A value is inserted
unescaped only when it is `markupsafe.Markup`: the navigation from `pages.nav` and SVG drawn by
`gateway.clinical.drawing`, both built from escaped text.
"""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp_jinja2
from aiohttp import web
from markupsafe import Markup

from dashboards import jinja, pages
from dashboards.context import USER, csrf_token


def install(app: web.Application) -> None:
    aiohttp_jinja2.setup(app, **jinja.options())


def render(
    name: str, request: web.Request, context: Mapping[str, object], *, status: int = 200
) -> web.Response:
    """`name` filled with `context` plus what every page's frame needs: the navigation (none on
    a public page) and the CSRF token."""
    csrf = csrf_token(request)
    frame = {"csrf": csrf, "nav": Markup(pages.nav(request.get(USER), csrf))}
    return aiohttp_jinja2.render_template(name, request, {**frame, **context}, status=status)


def fragment(request: web.Request, name: str, context: Mapping[str, object]) -> Markup:
    """A part of a page (no frame) rendered from `name`, to place inside a page's body."""
    template = aiohttp_jinja2.get_env(request.app).get_template(name)
    return Markup(template.render(context))
