"""`graft rollout`: an expert, random or trained policy on vectorised envs, with a report.

`policy=<agent folder>` goes through `load_policy` (agent/loader.py), as `graft serve` does: a
folder with a saved action generator executes its action chunks (`ChunkPolicy`, receding horizon),
else the text Agent acts; `+output=none | <name>` picks as serve's `output=` does.

Writes rollout.json (from `graft.envs.rollout.rollout`, plus the policy's own counters under
`policy_stats`, e.g. the chunks it planned), rollout.md and episode0.png to the run folder and
returns the summary.
"""
from __future__ import annotations

from pathlib import Path

from graft.agent.runtime import configure_threads
from graft.curricula.config import run_dir
from graft.envs.atomic import write_json_atomic
from graft.envs.rollout import make_env_factory, make_policy, rollout
from omegaconf import OmegaConf


def build_policy(policy: str, env_cfg, seed: int, output: str | None = "auto", revisits: str = "repeat"):
    """The expert, the random policy, or `load_policy` on a saved agent folder for this env."""
    if policy in ("expert", "random"):
        return make_policy(policy, env_cfg, seed=seed)
    folder = Path(policy)
    if not (folder / "graft.json").exists():
        raise ValueError(f"policy must be 'expert', 'random' or a graft checkpoint folder; {policy!r} is none of these")
    from graft.agent.loader import load_policy

    env = make_env_factory(env_cfg)()
    try:
        return load_policy(folder, env, output=output, seed=seed, revisits=revisits)
    finally:
        env.close()


def write_markdown(summary: dict, path: Path) -> None:
    lines = [
        f"# Rollout: {summary['policy']} on {summary['env']}",
        "",
        "| episodes | envs | success rate | mean return | mean length | env-steps/s |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {summary['episodes']} | {summary['num_envs']} | {summary['success_rate']:.2f} | "
        f"{summary['mean_return']:.3f} | {summary['mean_length']:.1f} | {summary['steps_per_s']} |",
    ]
    stats = summary.get("policy_stats") or {}
    if stats.get("planned_chunks"):
        lines += ["", (f"Action chunks: {stats['planned_chunks']} planned for {summary['env_steps']} env steps, "
                       f"the first {stats['execute']} of each executed (receding horizon).")]
    if summary.get("frames_png"):
        lines += ["", f"![first episode]({summary['frames_png']})"]
    path.write_text("\n".join(lines) + "\n")


def run_rollout(cfg) -> dict:
    configure_threads(cfg.get("threads", "auto"))
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    policy = build_policy(str(cfg.policy), env_cfg, int(cfg.seed), cfg.get("output", "auto"),
                          str(cfg.get("revisits", "repeat")))
    out = run_dir(cfg, "rollout", env_cfg.get("name", "env"))
    summary = rollout(env_cfg, policy, episodes=int(cfg.episodes), num_envs=int(cfg.num_envs), seed=int(cfg.seed),
                      out_dir=out, vector=cfg.vector, frames=int(cfg.frames))
    if hasattr(policy, "stats"):
        summary["policy_stats"] = policy.stats()
        write_json_atomic(out / "rollout.json", summary)
    write_markdown(summary, out / "rollout.md")
    summary["run_dir"] = str(out)
    return summary
