"""IR → Python source, through the Jinja templates in ``templates/``.

The environment copies betterproto's compiler: ``StrictUndefined`` so a missing IR attribute
fails loudly instead of printing nothing, and ``trim_blocks``/``lstrip_blocks`` so template tags
leave no stray whitespace. The body is rendered before the header, which only needs the IR's
import lists.
"""

from __future__ import annotations

from functools import cache

import jinja2

from ._ir import ModuleIR, lower
from ._schema import Schema, parse_schema

__all__ = ["generate", "output_name", "render"]


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("qsse_codegen", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


def render(module: ModuleIR) -> str:
    """The source text of the generated module described by ``module``."""
    env = _environment()
    body = env.get_template("body.py.j2").render(module=module)
    header = env.get_template("header.py.j2").render(module=module)
    return header + body


def output_name(schema: Schema) -> str:
    """The file name of the module generated from ``schema``, e.g. ``rides.py``."""
    return f"{schema.package}.py"


def generate(source: str, path: str) -> tuple[Schema, str]:
    """Check the TOML ``source`` of the schema at ``path`` and generate its module.

    :raises SchemaError: listing every problem of the schema.
    """
    schema = parse_schema(source, path)
    return schema, render(lower(schema))
