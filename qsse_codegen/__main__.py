"""``python -m qsse_codegen`` runs the ``qsse-gen`` command."""

from .cli import main

main()
