"""Every YAML digitlab reads goes through one bounded loader: size, alias expansion, nesting and value count are
refused before values are built, with a message of bounded length."""

import re
import warnings
from pathlib import Path

import pytest

from digitlab.config.bounded_yaml import MAX_BYTES, UnreadableYaml, load_yaml_file, load_yaml_text
from digitlab.config.named_files import check_named_files
from digitlab.errors import SkippedFileWarning, UserError
from digitlab.report.run import Run
from digitlab.report.saved_config import read_config
from digitlab.sweep.sweep_file import MAX_CHOICES, load_sweep_file

REPO = Path(__file__).resolve().parents[1]


def alias_bomb(levels: int, width: int = 9) -> str:
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * width)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE = {
    "alias bomb": (alias_bomb(6), "expands to more than 10,000 values"),
    "wide alias bomb": (alias_bomb(3, 40), "expands to more than 10,000 values"),
    "alias in its own anchor": ("a: &loop [*loop]\n", "repeats itself endlessly"),
    "flow nesting": ("a: " + "[" * 300 + "]" * 300 + "\n", "nests more than 100 levels deep"),
    "block nesting": "".join(f"{'  ' * n}k{n}:\n" for n in range(150)) + "  " * 150 + "end: 1\n",
    "long flow list": ("a: [" + ", ".join(["7"] * 60_000) + "]\n", "expands to more than 10,000 values"),
    "long block list": ("a:\n" + "- 7\n" * 60_000, "expands to more than 10,000 values"),
    "many keys": ("".join(f"k{n}: {n}\n" for n in range(30_000)), "expands to more than 10,000 values"),
}
HOSTILE["block nesting"] = (HOSTILE["block nesting"], "nests more than 100 levels deep")


@pytest.mark.parametrize("text, why", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_text_is_refused_in_a_short_message(text, why):
    with pytest.raises(UnreadableYaml) as error:
        load_yaml_text(text, "The test document")
    assert str(error.value).startswith("The test document ") and why in str(error.value)
    assert len(str(error.value)) < 600


@pytest.mark.parametrize("size", [MAX_BYTES + 1, 12 * MAX_BYTES, 8 << 30], ids=["one byte over", "12 MB", "8 GB"])
def test_a_file_over_the_byte_limit_is_refused_without_reading_it_whole(tmp_path, size):
    path = tmp_path / "big.yaml"
    with path.open("wb") as stream:  # sparse: the file system holds almost nothing of it
        stream.write(b"a: [")
        stream.truncate(size)
    with pytest.raises(UnreadableYaml, match=f"is larger than {MAX_BYTES:,} bytes"):
        load_yaml_file(path, "config file")


def test_a_file_at_the_byte_limit_is_read(tmp_path):
    path = tmp_path / "padded.yaml"
    path.write_bytes(b"a: 1\n" + b"#" * (MAX_BYTES - 6) + b"\n")
    assert load_yaml_file(path, "config file") == {"a": 1}


@pytest.mark.parametrize("text", ["x: " + "a" * 5000 + ": b: c\n", "x: '" + "a" * 50_000, "[" * 5 + "a" * 9000 + "}"])
def test_a_syntax_error_quotes_a_bounded_text(text):
    with pytest.raises(UnreadableYaml, match="is not valid YAML") as error:
        load_yaml_text(text, "The test document")
    assert len(str(error.value)) < 600


@pytest.mark.parametrize("content", [b"\xff\xfe a: 1", b"\x1f\x8b\x08\x00", "a: café".encode("latin-1")])
def test_a_file_that_is_not_text_is_named(tmp_path, content):
    path = tmp_path / "binary.yaml"
    path.write_bytes(content)
    with pytest.raises(UnreadableYaml, match=f"The sweep file {re.escape(str(path))} is not UTF-8 text"):
        load_yaml_file(path, "sweep file")


def test_ordinary_documents_and_shared_parts_load():
    assert load_yaml_text("a: &x [1, 2]\nb: *x\nc: {d: 1.0e-3}\n", "T") == {"a": [1, 2], "b": [1, 2], "c": {"d": 0.001}}
    assert load_yaml_text("", "T") is None


@pytest.mark.parametrize("text, why", [HOSTILE["alias bomb"], HOSTILE["long block list"], HOSTILE["flow nesting"]],
                         ids=["alias bomb", "long list", "nesting"])
def test_a_hostile_sweep_file_is_one_paragraph(tmp_path, text, why):
    path = tmp_path / "sweep.yaml"
    path.write_text("space:\n  data.batch_size: {type: categorical, choices: [64, 128]}\n" + text)
    with pytest.raises(UserError, match=why) as error:
        load_sweep_file(path)
    assert str(error.value).startswith(f"The sweep file {path}") and len(str(error.value)) < 600


@pytest.mark.parametrize("count", [MAX_CHOICES + 1, 20_000, 200_000])
def test_too_many_choices_are_refused(tmp_path, count):
    path = tmp_path / "sweep.yaml"
    path.write_text("space:\n  data.batch_size:\n    type: categorical\n    choices:\n" + "    - 1\n" * count)
    with pytest.raises(UserError, match=f"lists {count:,} choices|expands to more than|larger than") as error:
        load_sweep_file(path)
    assert len(str(error.value)) < 600


def test_the_most_choices_allowed_load(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("space:\n  data.seed: {type: categorical, choices: [" + ", ".join(map(str, range(MAX_CHOICES)))
                    + "]}\n")
    assert len(load_sweep_file(path).space["data.seed"].choices) == MAX_CHOICES


@pytest.mark.parametrize("text, why", [HOSTILE["alias bomb"], HOSTILE["many keys"], HOSTILE["block nesting"]],
                         ids=["alias bomb", "many keys", "nesting"])
def test_the_report_blanks_a_hostile_run_config(tmp_path, text, why):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        assert read_config(path, Run("version_0")) is None
    [message] = [str(w.message) for w in warned if w.category is SkippedFileWarning]
    assert why in message and len(message) < 800


@pytest.mark.parametrize("flag", ["--config", "-c", "--config=", "--trainer", "--data="])
def test_files_that_options_name_are_checked_before_the_parser_reads_them(tmp_path, flag):
    path = tmp_path / "named.yaml"
    path.write_text(HOSTILE["alias bomb"][0])
    args = [flag + str(path)] if flag.endswith("=") else [flag, str(path)]
    with pytest.raises(UnreadableYaml, match="expands to more than"):
        check_named_files(["--model", "lenet5", *args])


def test_other_files_that_options_name_are_left_to_their_readers(tmp_path):
    checkpoint = tmp_path / "last.ckpt"
    checkpoint.write_bytes(b"\x00" * (MAX_BYTES + 10))
    check_named_files(["--ckpt_path", str(checkpoint), "--data.data_dir", str(tmp_path)])


def test_no_yaml_is_read_outside_the_bounded_loader():
    readers = re.compile(r"yaml\.(safe_load|load|full_load|unsafe_load|compose|parse)\(|get_loader\(\"yaml\"\)\(")
    found = [f"{path.relative_to(REPO)}:{number}" for path in sorted((REPO / "digitlab").rglob("*.py"))
             if path.name != "bounded_yaml.py"
             for number, line in enumerate(path.read_text().splitlines(), 1) if readers.search(line)]
    assert found == []


@pytest.mark.parametrize("text, why", [HOSTILE["alias bomb"], HOSTILE["long flow list"]], ids=["alias bomb", "long list"])
def test_a_hostile_stored_trial_config_is_refused_for_best_yaml(text, why):
    from types import SimpleNamespace

    from digitlab.sweep.results import best_config

    trial = SimpleNamespace(number=3, value=0.9, user_attrs={"config": text})
    with pytest.raises(UnreadableYaml, match=why):
        best_config(trial, "lenet5", "val/acc", True)


def test_a_hostile_sweep_marker_is_one_paragraph(tmp_path):
    from digitlab.sweep.report import MARKER, _load_study

    (tmp_path / MARKER).write_text(HOSTILE["alias bomb"][0])
    with pytest.raises(UserError, match="sweep marker .* expands to more than"):
        _load_study(tmp_path)
