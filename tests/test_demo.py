"""``demo.py`` writes only into a folder that is new, empty or an earlier demo's."""

from __future__ import annotations

import pytest

import demo
from utils.errors import UserError
from workflows.demo import DEMO_MARK, _claim


def test_a_folder_holding_other_files_is_refused_and_left_alone(tmp_path):
    (tmp_path / "config.yml").write_text("mine")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "mydata.txt").write_text("mine too")
    with pytest.raises(UserError, match="holds files the demo did not make"):
        demo.run_demo(tmp_path, epochs=1)
    assert (tmp_path / "config.yml").read_text() == "mine"
    assert (tmp_path / "raw" / "mydata.txt").read_text() == "mine too"
    assert not (tmp_path / DEMO_MARK).exists()


def test_a_new_empty_or_earlier_demo_folder_is_taken(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (tmp_path / "new" / "nested", empty):
        _claim(folder)
        assert (folder / DEMO_MARK).is_file()
    (empty / "raw").mkdir()  # an earlier demo's files
    _claim(empty)


def test_a_file_or_unwritable_place_is_a_message(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        _claim(tmp_path / "a_file")
    with pytest.raises(UserError, match="cannot write the demo folder"):
        _claim(tmp_path / "a_file" / "below")
