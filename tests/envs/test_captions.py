"""Captions and questions: found on the env's layers, exact, and only about their own modality."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from graft.envs.babyai import BabyAIEnv
from graft.envs.captions import GENERIC_PROMPTS, describe, describe_modalities, describers
from graft.envs.mujoco_reach import ReachEnv
from user_sensors import LineWorld


def _modalities(env, obs) -> list[str]:
    return list(dict.fromkeys(u.modality for u in describe(env, obs, np.random.default_rng(0))))


def test_object_list_gets_exact_captions_and_questions():
    env = ReachEnv(objects=True)
    plain = ReachEnv()
    try:
        assert _modalities(env, env.reset(seed=0)[0]) == ["rgb", "depth", "proprio", "objects"]
        assert "objects" not in _modalities(plain, plain.reset(seed=0)[0])
        seen = 0
        for seed in range(6):
            obs, _ = env.reset(seed=seed)
            said = [u for u in describe(env, obs, np.random.default_rng(seed), questions=9) if u.modality == "objects"]
            caption = next(u for u in said if u.kind == "caption")
            assert caption.prompt.endswith("\n<objects>")
            for colour, pos in ((env.target_color, env.target), (env.distractor_color, env.distractor)):
                assert f"{colour} sphere at x {round(pos[0] * 100)} cm, y {round(pos[1] * 100)} cm" in caption.response.lower()
            for u in said:
                if u.kind == "qa" and " sphere " in u.prompt and "Which" not in u.prompt:
                    colour = u.prompt.split(" the ")[1].split()[0]
                    pos = env.target if colour == env.target_color else env.distractor
                    if "to the left of the base" in u.prompt:
                        assert u.response == ("yes" if pos[0] < 0 else "no")
                    elif "within 13 cm" in u.prompt:
                        assert u.response == ("yes" if np.linalg.norm(pos) < 0.13 else "no")
                    else:
                        assert u.prompt.split("\n")[0].endswith("relative to the base?") and u.response in {"front", "back", "left", "right"}
                    seen += 1
                assert "fingertip" not in u.prompt and " arm" not in u.prompt  # the object list does not show the arm
        assert seen > 0
    finally:
        env.close()
        plain.close()


class Relabel(gym.Wrapper):
    """Re-describes rgb (outer layers win, in place) and describes a key of its own with no prompts."""

    def describe(self, obs, rng):
        return {"rgb": ("A picture.", [("Is this a picture?", "yes")]), "note": ("Nothing to note.", [])}


def test_outer_layers_add_and_replace_descriptions_in_place():
    env = Relabel(BabyAIEnv())
    obs, _ = env.reset(seed=0)
    assert describers(env) == [env, env.unwrapped]
    said = describe_modalities(env, obs, np.random.default_rng(0))
    assert list(said) == ["grid", "rgb", "note"] and said["rgb"][0] == "A picture."
    assert said["grid"] == env.unwrapped.describe(obs, None)["grid"]
    note = [u for u in describe(env, obs, np.random.default_rng(0)) if u.modality == "note"]
    assert [u.kind for u in note] == ["caption"] and note[0].prompt.split("\n")[0] in GENERIC_PROMPTS


def test_no_describer_means_no_language_and_a_bad_one_is_a_clear_error():
    env = LineWorld()
    assert describe(env, env.reset(seed=0)[0], np.random.default_rng(0)) == []

    class Bad(gym.Wrapper):
        def describe(self, obs, rng):
            return {"rgb": "just a caption"}

    with pytest.raises(TypeError, match=r"Bad.describe\(obs, rng\) returned 'rgb'.*expected \{modality: \(caption"):
        describe(Bad(BabyAIEnv()), BabyAIEnv().reset(seed=0)[0], np.random.default_rng(0))
