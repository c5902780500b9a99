"""The notebooks run as tests through nbmake, collected here rather than by `--nbmake` in the
pytest options: each is marked `notebooks` and `slow`, so the default run executes them and
`pytest -m "not slow"` leaves them out. (`--nbmake` on the command line still works: nbmake then
collects them itself.)"""

import pytest

try:
    from nbmake.pytest_items import NotebookFile
except ImportError:  # without the dev extra: no notebooks to run
    NotebookFile = None


def pytest_collect_file(file_path, parent):
    if NotebookFile is not None and file_path.suffix == ".ipynb" and not parent.config.option.nbmake:
        notebook = NotebookFile.from_parent(parent, path=file_path)
        notebook.add_marker(pytest.mark.notebooks)
        notebook.add_marker(pytest.mark.slow)
        return notebook
    return None


def pytest_collection_modifyitems(items):
    for item in items:  # also when --nbmake collected them
        if item.path.suffix == ".ipynb" and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.notebooks)
            item.add_marker(pytest.mark.slow)
