"""Captions and questions for the reach env's object list are exact and only about objects."""
from __future__ import annotations

import numpy as np
from graft.envs.captions import describe, language_modalities
from graft.envs.mujoco_reach import ReachEnv


def test_object_list_gets_exact_captions_and_questions():
    env = ReachEnv(objects=True)
    try:
        assert language_modalities(env) == ("rgb", "depth", "proprio", "objects")
        assert "objects" not in language_modalities(ReachEnv())
        seen = 0
        for seed in range(6):
            obs, _ = env.reset(seed=seed)
            said = [u for u in describe(env, obs, np.random.default_rng(seed), questions=9) if u.modality == "objects"]
            caption = next(u for u in said if u.kind == "caption")
            assert caption.prompt.startswith("<objects>\n")
            for colour, pos in ((env.target_color, env.target), (env.distractor_color, env.distractor)):
                assert f"{colour} sphere at x {round(pos[0] * 100)} cm, y {round(pos[1] * 100)} cm" in caption.response.lower()
            for u in said:
                if u.prompt.endswith("How many objects are there?"):
                    assert u.response == "2"
                if "to the left or to the right" in u.prompt:
                    colour = u.prompt.split(" the ")[1].split()[0]
                    pos = env.target if colour == env.target_color else env.distractor
                    assert u.response == ("left" if pos[0] < 0 else "right")
                    seen += 1
                assert "fingertip" not in u.prompt  # the object list does not show the arm
        assert seen > 0
    finally:
        env.close()
