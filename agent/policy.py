"""Policies over an MM-LLM: the `Policy` contract, observation checks, and the text `Agent`.

Every policy (`Agent` here, `ChunkPolicy` in agent/chunk_policy.py) offers the same small contract,
whoever drives it (graft serve, graft rollout, graft ros2, evaluation):

    policy.infer(obs)                   one observation -> {"actions": (A,) | () | (H, A)}
    policy.infer_batch(obs_batch)       stateless, a batch -> {"actions": (B, ...)}
    policy(obs_batch, infos)            one vector-env step -> actions (B, ...) (graft.envs.rollout)
    policy.reset(env_ids)               episodes of these sub-envs start afresh
    policy.modalities                   the input modalities its prompt shows
    policy.observation_spec()           what one observation must be (the server's handshake)

An observation is validated once, where it enters: `infer`, `infer_batch` and `__call__` check
their input (`check`), except `infer_batch(validated=True)` for the server, which has already
checked each request against the handshake (agent/serve.py). The policy's examples are marked
`checked`, so the MM-LLM encodes the arrays without re-checking them.

The `Agent` answers in the demonstrations' format (see `graft.envs.datagen`): the modality
placeholders, the mission, "What is the next action?". Discrete action spaces are answered by
scoring every action name in one forward pass (no sampling, no parsing); continuous ones by greedy
generation of the action's numbers, parsed and checked against the action space. `deploy=True`
scores on a merged copy of the adapters (agent/fast_path.py): for where the agent only acts.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from graft.agent.mmllm import MMLLM, Example
from graft.agent.modalities.base import Modality
from graft.envs.prompts import ACT_PROMPT, fill
from graft.envs.episode_memory import EpisodeMemory
from graft.envs.spec import ModalitySpec, ObservationError, ObservationSpec, env_modality_specs

PROMPT = ACT_PROMPT  # "Mission: {mission}\nWhat is the next action?\n{tags}" (envs/prompts.py)
NUMBER = re.compile(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")


# ---- one check per modality --------------------------------------------------------------------------
class CheckedSpec(ModalitySpec):
    """`spec` with `description` whose `validate` is one given check (see `boundary_spec`); it serialises
    like any ModalitySpec (`check` is no dataclass field: it stays on this side of the handshake)."""

    def __init__(self, spec: ModalitySpec, description: str, check: Callable[[Any, bool], np.ndarray]):
        super().__init__(spec.name, spec.shape, spec.dtype, spec.low, spec.high, description)
        object.__setattr__(self, "check", check)

    def validate(self, value: Any, batched: bool = False) -> np.ndarray:
        return self.check(value, batched)


def implies(a: ModalitySpec, b: ModalitySpec) -> bool:
    """Whether every value `a` accepts is accepted by `b` too (so checking `a` covers `b`)."""
    if len(a.shape) != len(b.shape) or np.dtype(a.dtype) != np.dtype(b.dtype):
        return False
    if any(want is not None and got != want for got, want in zip(a.shape, b.shape)):
        return False
    if b.low is not None and (a.low is None or a.low < b.low):
        return False
    return b.high is None or (a.high is not None and a.high <= b.high)


def boundary_spec(env_spec: ModalitySpec | None, modality: Modality) -> ModalitySpec:
    """The spec one observation of `modality` is checked against, as ONE validation: the env's exact
    spec when it covers the modality's (rgb: the env's 56x56 covers any HxW), the modality's own
    `validate` when that covers the env's and adds rules of its own (grid's per-channel index
    ranges), both in turn only when neither covers the other. No env spec: the modality's own."""
    own = modality.spec
    env = env_spec or own
    own_check = functools.partial(type(modality).validate, modality)
    if type(modality).validate is Modality.validate and implies(env, own):
        return env
    if implies(own, env):
        return CheckedSpec(own, env.description, own_check)

    def both(value: Any, batched: bool) -> np.ndarray:
        return own_check(ModalitySpec.validate(env, value, batched), batched)
    return CheckedSpec(env, env.description, both)


# ---- the contract -------------------------------------------------------------------------------------
class Policy:
    """Shared parts of the policies (see the module docstring). A subclass sets `mm`, `action_space`
    and `modalities` and implements `_infer_batch(obs)` on validated observations."""

    name = "policy"
    reader = "policy"  # how errors name it
    prompt: str  # "{tags}" and "{mission}" slots
    mm: MMLLM
    action_space: gym.Space
    env_specs: dict[str, ModalitySpec]

    @property
    def modalities(self) -> list[str]:
        return self._modalities

    @modalities.setter
    def modalities(self, names: Sequence[str]) -> None:
        names = list(names)
        unknown = [m for m in names if m not in self.mm.modalities]
        if unknown:
            raise ValueError(f"{self.reader} reads {unknown} but the MM-LLM has only {list(self.mm.modalities)}")
        self._modalities = names
        self.specs = {m: boundary_spec(self.env_specs.get(m), self.mm.modalities[m]) for m in names}

    def observation_spec(self) -> ObservationSpec:
        """One observation: each modality the policy reads (one check each) and the mission as text."""
        return ObservationSpec(dict(self.specs), text_keys=("mission",))

    def check(self, obs: Mapping[str, Any], batched: bool = False) -> dict[str, Any]:
        """`obs` validated (arrays of the modalities read, the mission(s)) or ObservationError."""
        out: dict[str, Any] = self.observation_spec().validate(obs, batched)
        if batched:
            n = len(next(iter(out.values()))) if out else len(obs.get("mission", ()))
            missions = obs.get("mission", [""] * n)
            if isinstance(missions, str) or len(missions) != n:
                raise ObservationError(f"text key 'mission': expected {n} missions (one per row), got {missions!r:.80}")
            out["mission"] = list(missions)
        else:
            out["mission"] = obs.get("mission", "")
        self.check_text(out, batched)
        return out

    def check_text(self, obs: Mapping[str, Any], batched: bool = False) -> None:
        """The mission is plain text: no modality placeholder such as `<grid>` (it would splice a second
        observation slot into the prompt) and no output's signal token (reserved for the model's
        output: it would move where the conditioning is read)."""
        mm = self.mm
        reserved = [f"<{m}>" for m in mm.modalities]
        reserved += [t for head in mm.outputs.values() for t in head.token_strings()]
        for mission in obs.get("mission", "") if batched else [obs.get("mission", "")]:
            if not isinstance(mission, str):
                raise ObservationError(f"text key 'mission': expected a str, got {type(mission).__name__}")
            for token in reserved:
                if token in mission:
                    kind = "placeholder" if token[1:-1] in mm.modalities else "signal token"
                    why = "the observation itself" if kind == "placeholder" else "the model's output"
                    raise ObservationError(f"text key 'mission' contains the {kind} {token}, which is reserved "
                                           f"for {why}; expected plain text")

    def infer_batch(self, obs: Mapping[str, Any], *, validated: bool = False) -> dict[str, np.ndarray]:
        """Stateless answers for a batch `{modality: (B, ...), "mission": [B str]}` → {"actions": (B, ...)}."""
        if not validated:
            obs = self.check(obs, batched=True)
        if self.mm.training:  # eval() walks every module: only when needed
            self.mm.eval()
        with torch.no_grad():
            return {"actions": self._infer_batch(obs)}

    def infer(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """One observation `{modality: array, "mission": str}` → {"actions": one answer}."""
        obs = self.check(obs)
        batch = {m: np.asarray(obs[m])[None] for m in self.modalities}  # (1, ...) per modality
        batch["mission"] = [obs.get("mission", "")]
        return {k: v[0] for k, v in self.infer_batch(batch, validated=True).items()}

    def __call__(self, obs: Mapping[str, Any], infos: Mapping[str, Any] | None = None) -> np.ndarray:
        """One step of vector envs: actions `(B, *action_shape)`."""
        return self.infer_batch(obs)["actions"]

    def reset(self, env_ids: Any = None) -> None:
        """Stateless between steps: nothing to clear (the rollout loop calls this on episode ends)."""

    def stats(self) -> dict:
        return {}

    def examples(self, obs: Mapping[str, Any], rows: Sequence[int] | None = None) -> list[Example]:
        """Rows `rows` (default: all) of a validated batch as prompts in `self.prompt`'s format."""
        return [Example(fill(self.prompt, self.modalities, obs["mission"][i]),
                        {m: np.asarray(obs[m][i]) for m in self.modalities}, checked=True)
                for i in (range(len(obs["mission"])) if rows is None else rows)]

    def _infer_batch(self, obs: Mapping[str, Any]) -> np.ndarray:
        raise NotImplementedError


class Agent(Policy):
    """A batched text policy over an MM-LLM: `agent(obs_batch, infos) -> actions (num_envs, ...)`."""

    name = "checkpoint"
    reader = "agent"
    deterministic = True  # argmax over scored action names / greedy decoding (no sampling)

    def __init__(self, mm: MMLLM, action_space: gym.Space, action_names: Sequence[str] | None = None,
                 modalities: Sequence[str] | None = None, prompt: str = PROMPT, max_new_tokens: int = 32,
                 invalid: str = "raise", deploy: bool = False, dtype: torch.dtype | None = None,
                 specs: Mapping[str, ModalitySpec] | None = None, revisits: str = "repeat"):
        if invalid not in ("raise", "fallback"):
            raise ValueError(f"invalid must be 'raise' or 'fallback', got {invalid!r}")
        if revisits not in ("repeat", "escape"):
            raise ValueError(f"revisits must be 'repeat' (the same answer to the same observation) or 'escape' "
                             f"(the best action not yet taken at a repeated observation), got {revisits!r}")
        self.revisits = revisits
        self.memory = EpisodeMemory()  # revisits="escape": per sub-env, the actions taken at each observation
        self.mm, self.action_space, self.prompt, self.invalid = mm, action_space, prompt, invalid
        self.invalid_count = 0
        self.env_specs = dict(specs or {})  # what the env emits: the exact shapes it checks against
        self.modalities = list(modalities if modalities is not None else mm.modalities)
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if self.discrete:
            self.action_names = list(action_names or [str(i) for i in range(action_space.n)])
            if len(self.action_names) != action_space.n:
                raise ValueError(f"{len(self.action_names)} action names for Discrete({action_space.n})")
        elif not isinstance(action_space, gym.spaces.Box):
            raise TypeError(f"Agent supports Discrete and Box action spaces, got {action_space}")
        self.max_new_tokens, self.deploy, self.dtype = max_new_tokens, deploy, dtype

    @classmethod
    def for_env(cls, mm: MMLLM, env: gym.Env, **kwargs) -> Agent:
        """Read the action space, action names and emitted modalities (wrappers' sensors included)
        from an environment; the agent reads the modalities both sides share."""
        emits = env_modality_specs(env)
        shared = [m for m in mm.modalities if m in emits]
        return cls(mm, env.action_space, getattr(env.unwrapped, "action_names", None), modalities=shared,
                   specs=emits, **kwargs)

    @property
    def memoryless(self) -> bool:
        """Whether an action depends on the current observation alone (`revisits="repeat"`)."""
        return self.revisits == "repeat" or not self.discrete

    def scores(self, obs: Mapping[str, Any]) -> torch.Tensor:
        """Log-probabilities of every action name for a validated batch → `(B, K)`."""
        scorer = self.mm.scorer(merge=True, dtype=self.dtype) if self.deploy else self.mm
        return scorer.score(self.examples(obs), self.action_names)

    def _infer_batch(self, obs: Mapping[str, Any]) -> np.ndarray:
        if self.discrete:
            return self.scores(obs).argmax(-1).cpu().numpy().astype(np.int64)
        texts = self.mm.generate(self.examples(obs), max_new_tokens=self.max_new_tokens)
        return np.stack([self.continuous_or_fallback(t) for t in texts])

    def __call__(self, obs: Mapping[str, Any], infos: Mapping[str, Any] | None = None) -> np.ndarray:
        """One step of vector envs. With `revisits="escape"` each sub-env's episode remembers which
        actions it took at each observation it has seen (exact arrays and mission); at a repeated
        observation it takes the best-scoring action not yet taken there (once all were, the best):
        a greedy policy without memory repeats a revisited state's action and never leaves a loop."""
        if self.memoryless:
            return super().__call__(obs, infos)
        obs = self.check(obs, batched=True)
        if self.mm.training:
            self.mm.eval()
        with torch.no_grad():
            ranked = self.scores(obs).argsort(-1, descending=True).cpu().numpy()  # (B, K)
        actions = np.empty(len(ranked), dtype=np.int64)
        for i, order in enumerate(ranked):
            tried = self.memory.taken(obs, i, ["mission", *self.modalities])
            actions[i] = next((int(a) for a in order if int(a) not in tried), int(order[0]))
            tried.add(int(actions[i]))
        return actions

    def reset(self, env_ids: Any = None) -> None:
        """Episodes of these sub-envs start afresh: their `escape` memory is cleared."""
        self.memory.reset(env_ids)

    def memory_key(self, i: int) -> Any:
        """Sub-env `i`'s memory as a hashable value (None without memory): with the env's state it
        decides every later action, so a rollout can stop exactly where the pair repeats."""
        return None if self.memoryless else self.memory.key(i)

    def stats(self) -> dict:
        # invalid_answers: continuous answers that did not parse and became the space's centre
        return {"invalid_answers": self.invalid_count}

    def continuous_or_fallback(self, text: str) -> np.ndarray:
        """Parse an answer; with `invalid="fallback"` an unusable one becomes the space's centre."""
        try:
            action = self.parse_continuous(text)
            if self.action_space.contains(action):
                return action
            if self.invalid == "raise":
                raise ValueError(f"action {action.tolist()} is outside {self.action_space}")
        except ValueError:
            if self.invalid == "raise":
                raise
        self.invalid_count += 1
        low, high = self.action_space.low, self.action_space.high
        return ((low + high) / 2).astype(self.action_space.dtype)

    def parse_continuous(self, text: str) -> np.ndarray:
        dim = int(np.prod(self.action_space.shape))
        values = [float(v) for v in NUMBER.findall(text)[:dim]]
        if len(values) < dim:
            raise ValueError(f"expected {dim} numbers for action space {self.action_space}, the model said {text!r}")
        return np.asarray(values, dtype=self.action_space.dtype).reshape(self.action_space.shape)
