"""`atomic_write`: the one writer. A new file never replaces anything; a replaced file is never half written;
a symbolic link at the target is never followed nor replaced."""

import os

import pytest

from digitlab.utils.atomic import LinkAtTarget, atomic_output, atomic_write, atomic_write_text


def test_a_file_is_written_and_replaced_whole_with_the_permissions_of_a_new_file(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "first", overwrite=True)
    atomic_write_text(target, "second", overwrite=True)
    assert target.read_text() == "second" and os.listdir(target.parent) == ["out.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_write_leaves_the_previous_content_and_no_temporary_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"previous")

    def half_then_fail(stream):
        stream.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail, overwrite=True)
    assert target.read_bytes() == b"previous" and os.listdir(tmp_path) == ["out.bin"]


def test_no_overwrite_refuses_an_existing_name_and_keeps_its_content(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("mine")
    with pytest.raises(FileExistsError) as error:
        atomic_write_text(target, "new", overwrite=False)
    assert error.value.filename == str(target)
    assert target.read_text() == "mine" and os.listdir(tmp_path) == ["out.txt"]


def test_no_overwrite_refuses_a_name_taken_while_the_file_was_written(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(FileExistsError):
        with atomic_output(target, overwrite=False) as temporary:
            temporary.write_text("new")
            target.write_text("written meanwhile")
    assert target.read_text() == "written meanwhile" and os.listdir(tmp_path) == ["out.txt"]


def test_no_overwrite_on_a_filesystem_without_hard_links_creates_exclusively(tmp_path, monkeypatch):
    def no_links(source, destination):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    atomic_write_text(tmp_path / "new.txt", "content", overwrite=False)
    assert (tmp_path / "new.txt").read_text() == "content" and os.listdir(tmp_path) == ["new.txt"]
    with pytest.raises(FileExistsError):
        atomic_write_text(tmp_path / "new.txt", "other", overwrite=False)
    assert (tmp_path / "new.txt").read_text() == "content"


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("dangling", [False, True])
def test_a_link_at_the_target_is_neither_followed_nor_replaced(tmp_path, dangling, overwrite):
    pointed = tmp_path / "pointed.txt"
    if not dangling:
        pointed.write_text("not to be written")
    link = tmp_path / "link.txt"
    link.symlink_to(pointed)
    with pytest.raises(LinkAtTarget) as refused:
        atomic_write_text(link, "new", overwrite=overwrite)
    assert isinstance(refused.value, FileExistsError) and refused.value.filename == str(link)
    assert link.is_symlink() and sorted(os.listdir(tmp_path)) == ["link.txt"] + ["pointed.txt"] * (not dangling)
    assert (pointed.read_text() == "not to be written") if not dangling else not pointed.exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_link_made_while_the_file_was_written_is_not_replaced(tmp_path, overwrite):
    target = tmp_path / "out.txt"
    with pytest.raises(LinkAtTarget):
        with atomic_output(target, overwrite=overwrite) as temporary:
            temporary.write_text("new")
            target.symlink_to(tmp_path / "nowhere")
    assert target.is_symlink() and os.listdir(tmp_path) == ["out.txt"]
