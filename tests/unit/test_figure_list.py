"""Every figure the reductions draw is listed in the README with what it shows."""

from pathlib import Path

from operando.callbacks.saxs.figures import FIGURES as SAXS_FIGURES
from operando.callbacks.xct.figures import FIGURES as XCT_FIGURES

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_lists_every_figure_with_its_description():
    text = README.read_text()
    section = text[text.index("## Figures") :]
    section = section[: section.index("\n## ", 1)]
    for figures in (XCT_FIGURES, SAXS_FIGURES):
        for name, description in figures.items():
            assert f"- `{name}`: {description}." in section, name
