"""README.md's Python examples run as written against the API, on the in-process runtime.

"Use it from Python" runs on a store in a temporary folder, with ``runtime="local"`` in place
of its Ray setting ``workers=2`` and 2,000 rows in place of 1,000,000; the CODAP plugin example
runs after it on a ``Mammals`` context made for it. A renamed method, keyword or result field
fails here. (The Ray Data example is run by ``examples/raydata.ipynb`` in
``tests/test_notebooks.py``.)
"""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _changed(code: str, old: str, new: str) -> str:
    assert old in code, f"README's example no longer holds {old!r}: update this test with it"
    return code.replace(old, new)


def test_the_python_examples_of_the_readme_run(tmp_path, capsys):
    blocks = python_blocks()
    first = next(b for b in blocks if "batchray.connect(" in b)
    codap = next(b for b in blocks if b.lstrip().startswith("client.codap("))
    code = _changed(first, 'store="./batchray-data", workers=2', f'store={str(tmp_path / "store")!r}, runtime="local"')
    code = _changed(code, "1_000_000", "2_000")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("True 2000 ")  # success, items_created, duration
    assert printed[1] == str(sum(1 for i in range(2_000) if i % 90 < 30))  # no age under 30 was raised
    assert printed[2].startswith("[{'id': ")

    import batchray

    with batchray.connect(tmp_path / "store", runtime="local", progress=False) as client:
        client.create_data_context("Mammals", collections=[
            {"name": "Mammals", "attrs": [{"name": "Diet"}, {"name": "Mass", "type": "numeric"}]}])
        client.create_items("Mammals", None, [{"Diet": "plants", "Mass": 5}, {"Diet": "meat", "Mass": ""}])
        exec(compile(codap, "README.md", "exec"), {"client": client})
        # an atomic array's writes are planned against the store as before it: the search
        # deletes the meat item, not the fish created in the same array
        assert sorted(item["values"]["Diet"] for item in client.get_items("Mammals")) == ["fish", "plants"]
