"""Atomic folder writes survive a kill at any point: the reader always finds a complete folder."""
from __future__ import annotations

import os

import pytest
from graft.envs.atomic import recover_dir, write_dir_atomic


def _writer(text: str):
    def write(tmp):
        (tmp / "state.json").write_text(text)
    return write


def test_rewrites_replace_the_folder_and_leave_no_temporaries(tmp_path):
    final = tmp_path / "checkpoint"
    write_dir_atomic(_writer("1"), final)
    write_dir_atomic(_writer("2"), final)
    assert (final / "state.json").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_a_kill_between_the_two_renames_is_recovered_from_the_old_folder(tmp_path):
    final = tmp_path / "checkpoint"
    write_dir_atomic(_writer("1"), final)
    os.replace(final, tmp_path / ".checkpoint.old")  # where a kill inside the swap leaves things
    assert not final.exists()
    assert (recover_dir(final) / "state.json").read_text() == "1"
    assert not (tmp_path / ".checkpoint.old").exists()
    assert (recover_dir(final) / "state.json").read_text() == "1"  # a no-op once in place


def test_a_failing_writer_keeps_the_previous_folder(tmp_path):
    final = tmp_path / "checkpoint"
    write_dir_atomic(_writer("1"), final)

    def broken(tmp):
        (tmp / "state.json").write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        write_dir_atomic(broken, final)
    assert (final / "state.json").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_read_checkpoint_recovers_a_swapped_out_checkpoint(tmp_path):
    import json

    import torch
    from graft.curricula.checkpoint import read_checkpoint
    from safetensors.torch import save_file

    def write(tmp):
        (tmp / "state.json").write_text(json.dumps({"stage": 1}))
        save_file({"w": torch.zeros(2)}, str(tmp / "tensors.safetensors"))

    final = tmp_path / "checkpoint"
    write_dir_atomic(write, final)
    os.replace(final, tmp_path / ".checkpoint.old")
    state, tensors = read_checkpoint(final)
    assert state == {"stage": 1} and torch.equal(tensors["w"], torch.zeros(2))
