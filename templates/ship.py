"""Ship the incident template in the wheel: the build copies ``templates/*.ipynb`` into the
package, as ``exportnb/templates/``, where :func:`exportnb.run.runner.default_template` finds it
in an installed (non-editable) exportnb. ``templates/`` stays the one canonical place.

pyproject.toml makes this setuptools' ``build_py``::

    [tool.setuptools.cmdclass]
    build_py = "templates.ship.BuildPy"
"""

from __future__ import annotations

from pathlib import Path

from setuptools.command.build_py import build_py

TEMPLATES = Path(__file__).resolve().parent
TARGET = ("exportnb", "templates")


class BuildPy(build_py):
    """setuptools' ``build_py``, then the templates into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads templates/
            return
        target = Path(self.build_lib, *TARGET)
        target.mkdir(parents=True, exist_ok=True)
        for notebook in sorted(TEMPLATES.glob("*.ipynb")):
            self.copy_file(str(notebook), str(target / notebook.name))
