"""A MuJoCo reaching task: a 2-link planar arm must touch the coloured target named in its mission.

The scene is a small MJCF of our own (no gymnasium assets), so the camera, the colours and the
render settings are under our control: shadows and multisampling are off because software
(Mesa EGL) rendering is what this project runs on. Observations are a modality dict:

    rgb      uint8   (H, W, 3)  oblique view of the arm and the spheres
    depth    float32 (H, W)     metric z-depth in metres from the same camera, clipped to max_depth
    proprio  float32 (6,)       [shoulder, elbow (rad), shoulder vel, elbow vel (rad/s), tip x, y (m)]
    objects  float32 (N, 5)     with `objects=True`: the spheres as a perception stack's object list
                                would give them, one row [x, y (m), r, g, b (0-1)] per sphere, in an
                                order drawn per episode (row 0 is not always the target)
    mission  str                "reach the red target"

Actions are joint-velocity commands in [-1, 1] (scaled by `max_joint_speed` rad/s). The episode
terminates on success (fingertip within `success_radius` of the target) and truncates at
`max_steps`. The target colour, the distractor colour and both positions come from the reset seed.

Its language (`describe`, `caption_prompts`: graft.envs.mujoco_reach_language) and its expert
(`make_expert`: inverse kinematics, graft.envs.experts.ReachExpert) are found through the wrapper chain.
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import importlib.util  # noqa: E402
import string  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from graft.envs.mujoco_reach_language import CAPTION_PROMPTS, describe_reach  # noqa: E402
from graft.envs.spec import ModalitySpec, ObservationSpec  # noqa: E402

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.9, 0.1, 0.1),
    "green": (0.1, 0.75, 0.15),
    "blue": (0.15, 0.3, 0.95),
    "yellow": (0.95, 0.85, 0.1),
}
LINK_LENGTHS = (0.10, 0.11)  # metres: shoulder→elbow, elbow→fingertip
# Targets lie in this annulus around the base: the elbow limit (2.6 rad) leaves ~0.057 m unreachable.
TARGET_RADIUS = (0.07, 0.19)
MISSION_CHARSET = string.ascii_letters + string.digits + " ,.'-"
PROPRIO_BOUND = 20.0  # |angle| <= pi, |tip| <= 0.21 m; joint speeds are clipped to this (rad/s)
OBJECT_FEATURES = 5  # x, y (m), r, g, b

_MJCF = """
<mujoco model="graft_reach">
  <compiler angle="radian"/>
  <option timestep="0.01" integrator="implicitfast"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{size}" offheight="{size}"/>
    <map znear="0.01" zfar="6"/>
  </visual>
  <asset>
    <texture name="checker" type="2d" builtin="checker" rgb1=".82 .82 .80" rgb2=".70 .70 .68"
             width="64" height="64"/>
    <material name="floor" texture="checker" texrepeat="6 6"/>
  </asset>
  <default><geom contype="0" conaffinity="0"/></default>
  <worldbody>
    <light pos="0 -0.3 1.2" dir="0 0.25 -1" directional="true" castshadow="false"/>
    <geom name="floor" type="plane" size="1.5 1.5 0.01" material="floor"/>
    <camera name="main" pos="0 -0.25 0.433" xyaxes="1 0 0 0 0.866 0.5" fovy="50"/>
    <body name="base" pos="0 0 0">
      <geom type="cylinder" size="0.022 0.012" pos="0 0 0.012" rgba=".25 .25 .25 1"/>
      <body name="upper" pos="0 0 0.03">
        <joint name="shoulder" type="hinge" axis="0 0 1" damping="0.001"/>
        <geom type="capsule" fromto="0 0 0 0.10 0 0" size="0.011" rgba=".92 .92 .92 1"/>
        <body name="fore" pos="0.10 0 0">
          <joint name="elbow" type="hinge" axis="0 0 1" range="-2.6 2.6" damping="0.001"/>
          <geom type="capsule" fromto="0 0 0 0.11 0 0" size="0.009" rgba=".55 .55 .6 1"/>
          <site name="fingertip" pos="0.11 0 0" size="0.011" rgba=".1 .1 .1 1"/>
        </body>
      </body>
    </body>
    <body name="target" mocap="true" pos="0.12 0 0.03">
      <geom name="target" type="sphere" size="0.016" rgba="1 0 0 1"/>
    </body>
    <body name="distractor" mocap="true" pos="-0.12 0 0.03">
      <geom name="distractor" type="sphere" size="0.016" rgba="0 0 1 1"/>
    </body>
  </worldbody>
  <actuator>
    <velocity name="shoulder" joint="shoulder" kv="0.05"/>
    <velocity name="elbow" joint="elbow" kv="0.05"/>
  </actuator>
</mujoco>
"""


def _load_triton_before_mesa() -> None:
    """Import triton (if installed) before the first EGL context.

    Mesa's software renderer loads the system libLLVM; a later `import triton` (torch.compile,
    transformers' model code) then segfaults while its own LLVM initialises. Seen with Mesa's
    libLLVM-15 and triton 3.8; triton first, then Mesa, works.
    """
    if importlib.util.find_spec("triton") is not None:
        try:
            import triton  # noqa: F401
        except Exception:  # a broken triton is torch's problem, not rendering's
            pass


def modality_specs(image_size: int = 64, max_depth: float = 2.0, objects: int = 0) -> dict[str, ModalitySpec]:
    """The modalities a `ReachEnv` of this image size emits (`objects`: rows of the object list, 0 = none)."""
    specs = {
        "rgb": ModalitySpec("rgb", (image_size, image_size, 3), "uint8", 0, 255,
                            "oblique camera view of the arm and the coloured spheres"),
        "depth": ModalitySpec("depth", (image_size, image_size), "float32", 0.0, max_depth,
                              "metric z-depth from the rgb camera, metres"),
        "proprio": ModalitySpec("proprio", (6,), "float32", -PROPRIO_BOUND, PROPRIO_BOUND,
                                "shoulder, elbow angle (rad), their velocities (rad/s), tip x, y (m)"),
    }
    if objects:
        specs["objects"] = ModalitySpec("objects", (objects, OBJECT_FEATURES), "float32", -1.0, 1.0,
                                        "one row [x, y (m), r, g, b] per sphere, order drawn per episode")
    return specs


class ReachEnv(gym.Env):
    """Reach the coloured target with a 2-link planar arm (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array", "depth_array"], "render_fps": 20}

    def __init__(
        self,
        image_size: int = 64,
        frame_skip: int = 5,
        max_steps: int = 100,
        success_radius: float = 0.02,
        max_joint_speed: float = 4.0,
        max_depth: float = 2.0,
        colors: tuple[str, ...] | list[str] = tuple(COLORS),
        distractor: bool = True,
        objects: bool = False,
        terminate_on_success: bool = True,
        render_mode: str | None = None,
        name: str = "mujoco_reach",
    ):
        unknown = [c for c in colors if c not in COLORS]
        if unknown or not colors:
            raise ValueError(f"colors must be a non-empty subset of {list(COLORS)}, got {list(colors)}")
        if distractor and len(colors) < 2:
            raise ValueError("a distractor needs at least two colors")
        if render_mode not in (None, *self.metadata["render_modes"]):
            modes = self.metadata["render_modes"]
            raise ValueError(f"render_mode must be None or one of {modes}, got {render_mode!r}")
        self.name = name
        self.image_size = int(image_size)
        self.frame_skip = int(frame_skip)
        self.max_steps = int(max_steps)
        self.success_radius = float(success_radius)
        self.max_joint_speed = float(max_joint_speed)
        self.max_depth = float(max_depth)
        self.colors = tuple(colors)
        self.use_distractor = bool(distractor)
        self.num_objects = (2 if self.use_distractor else 1) if objects else 0
        self.terminate_on_success = bool(terminate_on_success)
        self.render_mode = render_mode

        self.model = mujoco.MjModel.from_xml_string(_MJCF.format(size=max(self.image_size, 64)))
        self.data = mujoco.MjData(self.model)
        self.dt = self.model.opt.timestep * self.frame_skip
        self._tip = self.model.site("fingertip").id
        self._target_geom = self.model.geom("target").id
        self._distractor_geom = self.model.geom("distractor").id
        self._renderer: mujoco.Renderer | None = None
        self.model.actuator_ctrlrange[:] = [-self.max_joint_speed, self.max_joint_speed]
        self.model.actuator_ctrllimited[:] = 1

        self.modality_specs = modality_specs(self.image_size, self.max_depth, self.num_objects)
        self.observation_spec = ObservationSpec(self.modality_specs, text_keys=("mission",))
        s = self.image_size
        self.observation_space = gym.spaces.Dict({
            "rgb": gym.spaces.Box(0, 255, (s, s, 3), np.uint8),
            "depth": gym.spaces.Box(0.0, self.max_depth, (s, s), np.float32),
            "proprio": gym.spaces.Box(-PROPRIO_BOUND, PROPRIO_BOUND, (6,), np.float32),
            "mission": gym.spaces.Text(max_length=64, charset=MISSION_CHARSET),
        })
        if self.num_objects:
            self.observation_space["objects"] = gym.spaces.Box(-1.0, 1.0, (self.num_objects, OBJECT_FEATURES),
                                                               np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

        self.target_color = self.colors[0]
        self.distractor_color: str | None = None
        self.mission = ""
        self._object_order = np.arange(self.num_objects)
        self._steps = 0

    # -- privileged state (experts and captions read these) ------------------------------------
    @property
    def fingertip(self) -> np.ndarray:
        return self.data.site_xpos[self._tip][:2].copy()  # (2,) world x, y

    @property
    def target(self) -> np.ndarray:
        return self.data.mocap_pos[0][:2].copy()  # (2,)

    @property
    def distractor(self) -> np.ndarray | None:
        return self.data.mocap_pos[1][:2].copy() if self.use_distractor else None

    @property
    def joint_angles(self) -> np.ndarray:
        return self.data.qpos[:2].copy()  # (2,) shoulder, elbow

    def spheres(self) -> list[tuple[str, np.ndarray]]:
        """(colour, (2,) x, y) of the target, then of the distractor if there is one."""
        out = [(self.target_color, self.target)]
        if self.use_distractor:
            out.append((self.distractor_color, self.distractor))
        return out

    def tip_jacobian(self) -> np.ndarray:
        """d(tip x, y) / d(shoulder, elbow), shape (2, 2)."""
        jacp = np.zeros((3, self.model.nv))
        mujoco.mj_jacSite(self.model, self.data, jacp, None, self._tip)
        return jacp[:2, :2]

    def distance(self) -> float:
        return float(np.linalg.norm(self.fingertip - self.target))

    def camera_depth(self, xy: np.ndarray, z: float = 0.03) -> float:
        """Metric z-depth of the world point (x, y, z) from the camera, as the depth image measures it."""
        cam = self.model.camera("main").id
        forward = -self.data.cam_xmat[cam].reshape(3, 3)[:, 2]  # cameras look down their -z axis
        return float(np.dot(np.array([xy[0], xy[1], z]) - self.data.cam_xpos[cam], forward))

    # -- language and expert (found by graft.envs.captions / graft.envs.experts) ----------------
    caption_prompts = CAPTION_PROMPTS

    def describe(self, obs: dict[str, Any], rng: np.random.Generator | None = None) -> dict[str, tuple]:
        """`{modality: (caption, [(question, answer), ...])}` for rgb, depth, proprio (and objects)."""
        return describe_reach(self, obs)

    def make_expert(self, **kwargs):
        """The expert for this task: `ReachExpert(**kwargs)` (damped least squares on the tip Jacobian)."""
        from graft.envs.experts import ReachExpert

        return ReachExpert(**kwargs)

    # -- gymnasium API ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[0] = rng.uniform(-np.pi, np.pi)
        self.data.qpos[1] = rng.uniform(-2.2, 2.2)
        order = rng.permutation(len(self.colors))
        self.target_color = self.colors[order[0]]
        target = self._sample_point(rng)
        self.data.mocap_pos[0] = [*target, 0.03]
        self.model.geom_rgba[self._target_geom] = [*COLORS[self.target_color], 1.0]
        if self.use_distractor:
            self.distractor_color = self.colors[order[1]]
            # Keep the distractor clearly apart from the target so "which sphere" is unambiguous.
            while True:
                other = self._sample_point(rng)
                if np.linalg.norm(other - target) > 0.08:
                    break
            self.data.mocap_pos[1] = [*other, 0.03]
            self.model.geom_rgba[self._distractor_geom] = [*COLORS[self.distractor_color], 1.0]
        else:
            self.distractor_color = None
            self.data.mocap_pos[1] = [0.0, 0.0, -1.0]  # under the floor, out of view
        if self.num_objects:  # drawn last, so the scene of a seed is the same with or without objects
            self._object_order = rng.permutation(self.num_objects)
        mujoco.mj_forward(self.model, self.data)
        self.mission = f"reach the {self.target_color} target"
        self._steps = 0
        return self.observe(), self._info()

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(2)
        self.data.ctrl[:] = np.clip(action, -1.0, 1.0) * self.max_joint_speed
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        self._steps += 1
        dist = self.distance()
        success = dist <= self.success_radius
        reward = -dist + (1.0 if success else 0.0)
        terminated = bool(success and self.terminate_on_success)
        truncated = bool(self._steps >= self.max_steps and not terminated)
        return self.observe(), float(reward), terminated, truncated, self._info()

    def render(self):
        if self.render_mode is None:
            return None
        rgb, depth = self._render()
        return rgb if self.render_mode == "rgb_array" else depth

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # -- internals --------------------------------------------------------------------------------
    def _sample_point(self, rng: np.random.Generator) -> np.ndarray:
        r = rng.uniform(*TARGET_RADIUS)
        a = rng.uniform(-np.pi, np.pi)
        return np.array([r * np.cos(a), r * np.sin(a)])

    def _render(self) -> tuple[np.ndarray, np.ndarray]:
        if self._renderer is None:
            _load_triton_before_mesa()
            self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        r = self._renderer
        r.update_scene(self.data, camera="main")
        rgb = r.render()  # (H, W, 3) uint8
        r.enable_depth_rendering()
        depth = r.render()  # (H, W) float32, metres
        r.disable_depth_rendering()
        np.clip(depth, 0.0, self.max_depth, out=depth)
        return rgb, depth

    def observe(self) -> dict[str, Any]:
        """The observation of the current state (what `step` returns), without stepping."""
        rgb, depth = self._render()
        q = self.data.qpos[:2]
        shoulder = (q[0] + np.pi) % (2 * np.pi) - np.pi
        proprio = np.array([shoulder, q[1], *self.data.qvel[:2], *self.fingertip], dtype=np.float32)
        np.clip(proprio, -PROPRIO_BOUND, PROPRIO_BOUND, out=proprio)
        obs = {"rgb": rgb, "depth": depth, "proprio": proprio, "mission": self.mission}
        if self.num_objects:
            obs["objects"] = self.object_list()
        return obs

    def object_list(self) -> np.ndarray:
        """The spheres as rows [x, y (m), r, g, b] in this episode's drawn order → `(N, 5)` float32."""
        rows = [[*xy, *COLORS[color]] for color, xy in self.spheres()]
        return np.asarray(rows, dtype=np.float32)[self._object_order]

    def _info(self) -> dict[str, Any]:
        dist = self.distance()
        return {"is_success": bool(dist <= self.success_radius), "distance": dist}


make_reach_env = ReachEnv  # the configs' `_target_`, with ReachEnv's keyword arguments
