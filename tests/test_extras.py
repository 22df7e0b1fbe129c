"""A missing optional extra is one line that names what to install."""

import pytest

from anivision.errors import AnivisionError
from anivision.extras import require


def test_require_returns_the_module() -> None:
    assert require("json", "export").dumps([1]) == "[1]"


def test_missing_extra_names_the_install_command() -> None:
    with pytest.raises(AnivisionError) as info:
        require("no_such_module_anivision_xyz", "index", "FAISS galleries")
    msg = str(info.value)
    assert "\n" not in msg and 'anivision[index]' in msg and "FAISS galleries" in msg
