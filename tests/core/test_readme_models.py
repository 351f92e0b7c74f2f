"""The docs' example of models as users have them (docs/models.md) runs, and says what the page says it says."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def example() -> str:
    text = README.read_text(encoding="utf-8")
    marker = text.index("<!-- models-example:")
    block = re.search(r"```python\n(.*?)```", text[marker:], re.S)
    assert block is not None
    return block.group(1)


def test_the_readme_example_of_composite_quantized_and_borrowed_models_runs() -> None:
    printed = io.StringIO()
    namespace: dict[str, object] = {"__name__": "readme_example"}
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move and deprecations
        exec(compile(example(), str(README), "exec"), namespace)
    out = printed.getvalue()
    assert "pipe: Pipe on cpu, 1,310,720 params, 5.0 MiB, loaded in" in out
    assert "q: Sequential on cpu, 1,049,600 params, 1.0 MiB, loaded in" in out
    assert "freed (storages that died): 0 B" in out
    assert "not counted as freed: 4.0 MiB borrowed from a numpy array or buffer" in out
    assert "released 2 model(s): pipe, q" in out and "freed (storages that died): cpu 6.0 MiB" in out
