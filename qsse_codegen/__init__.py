"""qsse-gen: turn a TOML schema of topics and events into a typed publisher/subscriber SDK.

The pipeline is :func:`load_schema` (TOML → checked :class:`Schema`), ``_ir.lower`` (schema →
intermediate representation with Python names and annotations) and :func:`render` (IR → module
text through Jinja templates). :func:`generate` runs all three. ``_names`` derives every
Python name the module defines, ``_breaking`` compares two versions of a schema
(``qsse-gen breaking``) and ``_asyncapi`` describes one as AsyncAPI 3.0 (``qsse-gen asyncapi``).
"""

from ._render import generate, render
from ._schema import Problem, Schema, SchemaError, load_schema, parse_schema

__all__ = ["Problem", "Schema", "SchemaError", "generate", "load_schema", "parse_schema", "render"]
