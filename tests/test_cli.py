"""The `graft` command runs in-process over the same functions users call."""
from __future__ import annotations

import numpy as np
from graft.curricula.cli import main


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    assert "chat" in capsys.readouterr().out


def test_unknown_command_fails_with_usage(capsys):
    assert main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


def test_cfg_prints_the_composed_config(capsys):
    assert main(["chat", "backbone=tiny_qwen2", "--cfg"]) == 0
    assert "model_type: qwen2" in capsys.readouterr().out


def test_chat_reads_an_observation_file_and_a_checkpoint(tmp_path, compose, capsys):
    from graft.agent.build import build_mmllm, save_mmllm
    from graft.curricula.chat import chat

    mm = build_mmllm(compose("chat"))
    save_mmllm(mm, tmp_path / "ckpt")
    grid = mm.modalities["grid"].sample(np.random.default_rng(1))
    np.save(tmp_path / "grid.npy", grid)
    args = [f"checkpoint={tmp_path / 'ckpt'}", "observation.grid.source=file", f"+observation.grid.path={tmp_path / 'grid.npy'}"]
    result = chat(compose("chat", args))
    assert result["observations"] == ["grid"]
    assert main(["chat", *args]) == 0
    assert capsys.readouterr().out.strip() == result["answer"]


def test_chat_takes_its_observation_from_an_environment(compose):
    from graft.curricula.chat import chat

    cfg = compose("chat", ["+modality@modalities.rgb=rgb", "prompt='<rgb> <grid> what is ahead?'",
                           "observation.grid.source=env", "+observation.grid.env=babyai_goto",
                           "+observation.rgb={source: env, env: babyai_goto}"])
    assert chat(cfg)["observations"] == ["grid", "rgb"]


def test_datagen_writes_every_kind_and_split(tmp_path):
    import datasets

    assert main(["datagen", "episodes=64", "text.train=20", "text.test=8", f"run_dir={tmp_path}"]) == 0
    for kind in ("pt", "it", "demo", "text"):
        for split in ("train", "test"):
            ds = datasets.Dataset.from_parquet(str(tmp_path / f"{kind}-{split}.parquet"))
            assert len(ds) > 0
    demo = datasets.Dataset.from_parquet(str(tmp_path / "demo-train.parquet"))
    assert set(demo["kind"]) == {"demo"}
    train_seeds = set(datasets.Dataset.from_parquet(str(tmp_path / "it-train.parquet"))["episode_seed"])
    test_seeds = set(datasets.Dataset.from_parquet(str(tmp_path / "it-test.parquet"))["episode_seed"])
    assert train_seeds and test_seeds and not train_seeds & test_seeds
    assert "rows/s" in (tmp_path / "datagen.md").read_text()
