import qsse_core


def test_all_is_the_sorted_set_of_public_names():
    public = {
        name
        for name, value in vars(qsse_core).items()
        if not name.startswith("_") and getattr(value, "__module__", "").startswith("qsse_core")
    }
    # Submodules that are part of the public surface are imported, not re-exported.
    public -= {"asyncio", "events", "testing", "cli", "typed"}
    assert sorted(qsse_core.__all__) == qsse_core.__all__
    assert set(qsse_core.__all__) >= public
    for name in qsse_core.__all__:
        value = getattr(qsse_core, name)
        if isinstance(value, type) or (callable(value) and hasattr(value, "__code__")):
            assert value.__module__.startswith("qsse_core"), name


def test_py_typed_is_shipped():
    from importlib.resources import files

    assert files("qsse_core").joinpath("py.typed").is_file()
