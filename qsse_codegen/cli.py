"""The ``qsse-gen`` command: thin Typer wrapper around :func:`run`.

Exit status: 0 on success, 1 when ``--check`` finds stale output, 2 when a schema has problems
(nothing is written then, not even the outputs of the good schemas).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

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
    written = []
    for o in outputs:
        if _read(o.path) != o.text:
            o.path.parent.mkdir(parents=True, exist_ok=True)
            # newline="" keeps "\n" on every platform, so output is byte-identical everywhere.
            tmp = o.path.with_suffix(".py.tmp")
            tmp.write_text(o.text, encoding="utf-8", newline="")
            os.replace(tmp, o.path)
            written.append(f"wrote {o.path.as_posix()}\n")
        else:
            written.append(f"{o.path.as_posix()} is up to date\n")
    return "".join(written)


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None


app = typer.Typer(add_completion=False, no_args_is_help=True)


@app.command(help="Generate a typed publisher/subscriber module from each TOML SCHEMA.")
def generate(
    schemas: Annotated[
        list[str],
        typer.Argument(help="Schema files (TOML).", show_default=False),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory the modules are written to.")
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


def main() -> None:
    """Entry point of the ``qsse-gen`` script."""
    app()
