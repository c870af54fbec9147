"""A new user's first day, outside this checkout: install qsse, generate a schema of their own,
import it, type-check an app with ``mypy --strict`` and publish and receive over loopback.

Both a regular and an editable install are tried. Each gets a fresh virtualenv whose only
extra path is this test environment's site-packages (for msgspec, aioquic, mypy...), so qsse
itself can only come from the install under test; the app checks where it came from. pip
builds with isolation, so it may fetch setuptools from the package index (cached afterwards).
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

from ._load import ROOT

#: Every step is one subprocess; none may take longer than this, in seconds.
STEP_TIMEOUT = 300

SHOP = """\
[schema]
package = "shop"
version = "1.0.0"
doc = "An online shop."

[enums.Size]
doc = "Garment size."
values = ["s", "m", "l"]

[records.Order]
doc = "An order."
fields.order_number = { type = "int", gt = 0, doc = "Order number." }
fields.size = { type = "Size", default = "m", doc = "Size." }

[topics.order_placed]
topic = "shop.{store}.order"
event = "Order"
doc = "An order was placed in a store."
params.store = { type = "str", doc = "The store." }
"""

APP = """\
import asyncio
import sys

import qsse_core
from generated import shop
from qsse_core import Client, ReconnectPolicy


async def main() -> None:
    received: list[int] = []
    got = asyncio.Event()
    async with shop.ShopPublisher.create_server(host="127.0.0.1", port=0) as server:
        topic = shop.ORDER_PLACED.topic(shop.OrderPlacedParams(store="berlin"))
        client = Client(
            server.address, [topic], insecure=True, reconnect=ReconnectPolicy(retry=False)
        )
        subscriber = shop.ShopSubscriber(client)

        @subscriber.on_order_placed
        def placed(event: shop.Order) -> None:
            received.append(event.order_number)
            got.set()

        async with client:
            await server.wait_subscribed(topic)
            shop.ShopPublisher(server).order_placed(shop.Order(order_number=7), store="berlin")
            await asyncio.wait_for(got.wait(), 10)
    print(qsse_core.__file__)
    print(shop.__file__)
    print(received)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
"""

#: Proves the generated module is typed (not all ``Any``): mypy must refuse this.
WRONG = """\
from generated import shop
from qsse_core import Client

number: str = shop.Order(order_number=1).order_number


def register(client: Client) -> None:
    shop.ShopSubscriber(client).on_order_placed(lambda e: e.order_numbr)
"""


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False
    )


def _sdist_tree(target: Path) -> Path:
    """What a source checkout of qsse holds, copied so builds leave nothing in this one."""
    source = target / "qsse-src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("qsse_core", "qsse_codegen", "generated"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    return source


@pytest.mark.parametrize("editable", [False, True], ids=["regular", "editable"])
def test_newcomer_path_outside_the_checkout(tmp_path: Path, editable: bool) -> None:
    source = _sdist_tree(tmp_path)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            tmp_path,
        ).stdout.strip()
    )
    # Dependencies come from this environment; qsse must come from the install below.
    (site / "_qsse_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")

    install = [str(python), "-m", "pip", "install", "--quiet", "--no-deps"]
    install += ["-e", str(source)] if editable else [str(source)]
    done = _run(install, tmp_path)
    assert done.returncode == 0, done.stderr
    installed = sorted(p.name for p in site.iterdir())
    assert "generated" not in installed, installed

    project = tmp_path / "project"
    project.mkdir()
    (project / "shop.toml").write_text(SHOP)
    (project / "app.py").write_text(APP)
    (project / "wrong.py").write_text(WRONG)

    done = _run([str(env_dir / "bin" / "qsse-gen"), "shop.toml"], project)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "wrote generated/shop.py\n"

    mypy = [str(python), "-m", "mypy", "--strict", "--no-incremental"]
    done = _run([*mypy, "app.py"], project)
    assert done.returncode == 0, done.stdout + done.stderr
    done = _run([*mypy, "wrong.py"], project)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines()[:2] == [
        'wrong.py:4: error: Incompatible types in assignment (expression has type "int", '
        'variable has type "str")  [assignment]',
        'wrong.py:8: error: "Order" has no attribute "order_numbr"; maybe "order_number"?  '
        "[attr-defined]",
    ]

    done = _run([str(python), "app.py"], project)
    assert done.returncode == 0, done.stderr
    core_file, shop_file, received = done.stdout.splitlines()
    home = source if editable else site
    assert Path(core_file) == home / "qsse_core" / "__init__.py"
    assert Path(shop_file) == project / "generated" / "shop.py"
    assert received == "[7]"
