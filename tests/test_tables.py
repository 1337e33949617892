"""The one table formatter: aligned columns, Markdown, CSV."""

import pytest

from digitlab.utils.tables import aligned_lines, csv_text, format_table

HEADER = ["name", "acc"]
ROWS = [["lenet5", "0.9900"], ["mlp", "0.98"]]


def test_aligned_columns_pad_text_left_numbers_right_and_end_without_spaces():
    assert aligned_lines(HEADER, ROWS, right=[False, True]) == ["name       acc", "lenet5  0.9900", "mlp       0.98"]
    assert aligned_lines(["a", "b"], [["long", ""]]) == ["a     b", "long"]


def test_table_and_markdown_styles():
    assert format_table(HEADER, ROWS, [False, True], "table") == "name       acc\nlenet5  0.9900\nmlp       0.98\n"
    assert format_table(HEADER, ROWS, [False, True], "markdown") == (
        "| name | acc |\n| --- | ---: |\n| lenet5 | 0.9900 |\n| mlp | 0.98 |\n")
    with pytest.raises(ValueError, match="unknown table style"):
        format_table(HEADER, ROWS, [False, True], "html")


def test_csv_has_raw_values_and_empty_fields_for_none():
    assert csv_text(["a", "b"], [[1, None], ["x,y", 0.5]]) == 'a,b\n1,\n"x,y",0.5\n'
    assert csv_text(["a"], [[1]], line_end="\r\n") == "a\r\n1\r\n"
