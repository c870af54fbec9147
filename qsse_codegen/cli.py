"""The ``qsse-gen`` command: thin Typer wrappers around :func:`run` and the other commands.

``qsse-gen SCHEMA...`` (the ``generate`` command, the default) writes modules; exit status 0
on success, 1 when ``--check`` finds stale output, 2 when a schema has problems (nothing is
written then, not even the outputs of the good schemas). ``qsse-gen breaking OLD NEW`` exits
1 when a change breaks a deployed side, 2 when a version cannot be read.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ._asyncapi import document
from ._breaking import VersionError, compare, load_version
from ._ir import lower
from ._render import output_name, render
from ._schema import Problem, SchemaError, load_schema

__all__ = ["app", "main", "run"]

EXIT_STALE = 1
EXIT_BAD_SCHEMA = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Output:
    schema: str
    path: Path
    text: str


class CliError(Exception):
    """A problem reported to the user with ``code`` as the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def build(schemas: Sequence[str], out: Path) -> list[Output]:
    """Generate every schema's module in memory.

    :raises CliError: with every schema problem, when any schema is bad.
    """
    outputs: list[Output] = []
    problems: list[Problem] = []
    for schema_path in schemas:
        try:
            schema = load_schema(schema_path)
        except SchemaError as exc:
            problems.extend(exc.problems)
            continue
        path = out / output_name(schema)
        clash = next((o for o in outputs if o.path == path), None)
        if clash is not None:
            problems.append(
                Problem(
                    schema_path,
                    None,
                    "schema.package",
                    f"package {schema.package!r} is also generated from {clash.schema}; "
                    f"both would write {path.as_posix()}",
                )
            )
            continue
        outputs.append(Output(schema_path, path, render(lower(schema))))
    if problems:
        raise CliError("\n".join(str(p) for p in problems), EXIT_BAD_SCHEMA)
    return outputs


def run(schemas: Sequence[str], *, out: Path, check: bool, stdout: bool) -> str:
    """Do what the command line asked; return what to print.

    :raises CliError: on bad schemas, or stale files under ``check``.
    """
    outputs = build(schemas, out)
    if stdout:
        return "".join(o.text for o in outputs)
    if check:
        stale = [o for o in outputs if _read(o.path) != o.text]
        if stale:
            lines = [
                f"{o.path.as_posix()} is out of date with {o.schema}; run: qsse-gen {o.schema}"
                + ("" if out == Path("generated") else f" --out {out.as_posix()}")
                for o in stale
            ]
            raise CliError("\n".join(lines), EXIT_STALE)
        return "".join(f"{o.path.as_posix()} is up to date\n" for o in outputs)
    if out.exists() and not out.is_dir():
        raise CliError(
            f"--out {out.as_posix()}: is a file, not a directory; name the directory the "
            "modules go to",
            EXIT_BAD_SCHEMA,
        )
    written = []
    for o in outputs:
        if _read(o.path) != o.text:
            try:
                _write(o.path, o.text)
            except OSError as exc:
                raise CliError(
                    f"cannot write {o.path.as_posix()}: {exc.strerror or exc}", EXIT_BAD_SCHEMA
                ) from None
            written.append(f"wrote {o.path.as_posix()}\n")
        else:
            written.append(f"{o.path.as_posix()} is up to date\n")
    return "".join(written)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # newline="" keeps "\n" on every platform, so output is byte-identical everywhere.
    tmp = path.with_suffix(".py.tmp")
    tmp.write_text(text, encoding="utf-8", newline="")
    os.replace(tmp, path)


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


class _DefaultGroup(TyperGroup):
    """Runs ``generate`` when the first argument is no command name: ``qsse-gen shop.toml``."""

    # ctx is Typer's vendored click Context, which Typer does not export.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["generate", *args]
        return super().parse_args(ctx, args)


# Plain click help: Typer's rich panels print a type for flags (`--check <bool>`), as if they
# took a value. Errors are reported as messages, never as tracebacks.
app = typer.Typer(
    cls=_DefaultGroup,
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Typed SDKs, breaking-change checks and AsyncAPI documents from qsse TOML schemas. "
    "Without a command, generates: qsse-gen schemas/rides.toml.",
)


@app.command(help="Generate a typed publisher/subscriber module from each TOML SCHEMA.")
def generate(
    schemas: Annotated[
        list[str],
        typer.Argument(help="Schema files (TOML).", show_default=False, metavar="SCHEMA"),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Directory the modules are written to.", metavar="DIR"),
    ] = Path("generated"),
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Write nothing; exit 1 naming each file that differs from its schema."
        ),
    ] = False,
    stdout: Annotated[
        bool, typer.Option("--stdout", help="Print the modules instead of writing them.")
    ] = False,
) -> None:
    try:
        text = run(schemas, out=out, check=check, stdout=stdout)
    except CliError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=exc.code) from None
    typer.echo(text, nl=False)


@app.command(
    help="Compare two versions of a schema and list every change with its rule id, key path "
    "and the deployed side it breaks; exit 1 when anything breaks. OLD and NEW are files, or "
    "REV:path for a git revision (main:schemas/rides.toml)."
)
def breaking(
    old: Annotated[str, typer.Argument(help="The deployed version.", metavar="OLD")],
    new: Annotated[str, typer.Argument(help="The version to ship.", metavar="NEW")],
) -> None:
    try:
        before, after = load_version(old), load_version(new)
    except (SchemaError, VersionError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=EXIT_BAD_SCHEMA) from None
    changes = compare(before, after)
    for change in changes:
        typer.echo(str(change))
    broken = [c for c in changes if c.breaks]
    if broken:
        typer.echo(f"{len(broken)} breaking change(s) from {old} to {new}", err=True)
        raise typer.Exit(code=EXIT_STALE)
    if not changes:
        typer.echo(f"no changes from {old} to {new}")


@app.command(
    help="Write the AsyncAPI 3.0 document of SCHEMA (JSON): a channel per topic with its "
    "parameters, a message per event with its JSON Schema payload, and the docs."
)
def asyncapi(
    schema: Annotated[str, typer.Argument(help="A schema file (TOML).", metavar="SCHEMA")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="File to write; standard output if left out.", metavar="FILE"
        ),
    ] = None,
) -> None:
    try:
        checked = load_schema(schema)
    except SchemaError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=EXIT_BAD_SCHEMA) from None
    text = json.dumps(document(checked), indent=2, ensure_ascii=False) + "\n"
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        typer.echo(f"cannot write {out.as_posix()}: {exc.strerror or exc}", err=True)
        raise typer.Exit(code=EXIT_BAD_SCHEMA) from None
    typer.echo(f"wrote {out.as_posix()}")


def main() -> None:
    """Entry point of the ``qsse-gen`` script."""
    app()
