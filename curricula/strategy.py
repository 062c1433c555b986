"""One method's run through a curriculum: graft → PT → IT → evaluate → gate → remember.

`MethodRun(cfg, name, stages, text, baseline, out).run()` returns the method's results (the
`report.json` entry). The loop is the avalanche shape — a strategy walking a stream of
experiences, with plugins for replay, text mixing, EWC and LwF (curricula/plugins.py) — over an
MM-LLM instead of a classifier. Every batch is drawn from a generator seeded by
(seed, stage, phase, step), so a run resumed from a checkpoint draws exactly the batches the
uninterrupted run would have. Output stages (goal images, action chunks) graft, train and score
through curricula/output_run.py; their generators live in `self.generators` and ride along in
checkpoints and the saved agent. Under `accelerate launch` each rank trains on its slice of every
batch and gradients are averaged across ranks (the DDP rule) before the optimiser step.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from graft.agent.backbone import load_backbone
from graft.agent.build import graft_modality, graft_task, save_mmllm
from graft.agent.mmllm import MMLLM
from graft.agent.training import trainable_report
from graft.curricula import checkpoint as ckpt
from graft.curricula import output_run
from graft.curricula.evaluate import accuracy, evaluate_row, mean_or_none
from graft.curricula.metrics import average_accuracy, backward_transfer, forgetting, forward_transfer
from graft.curricula.plugins import LwFPlugin, build_plugins
from graft.curricula.stages import Stage, to_example

PHASES = ("pt", "it")


def build_agent(cfg, routing: str | None = None) -> MMLLM:
    torch.manual_seed(int(cfg.seed))
    llm, tokenizer = load_backbone(OmegaConf.to_container(cfg.backbone, resolve=True))
    mm = MMLLM(llm, tokenizer, OmegaConf.to_container(cfg.lora, resolve=True), routing=routing or cfg.routing)
    mm.build_config = {"backbone": OmegaConf.to_container(cfg.backbone, resolve=True),
                       "lora": OmegaConf.to_container(cfg.lora, resolve=True), "routing": mm.routing}
    return mm


def graft_stage(mm: MMLLM, cfg, stage: Stage, shared: str | None):
    """Graft the stage onto `mm`; returns the output stage's generator (None for other stages)."""
    torch.manual_seed(int(cfg.seed) * 1000 + stage.index)  # the same init whether resumed or not
    if stage.kind == "output":
        return output_run.graft_output_stage(mm, stage, shared)
    if stage.modality is None:
        graft_task(mm, stage.name, adapter=shared)
    else:
        modality_cfg = cfg.modalities[stage.modality]
        graft_modality(mm, stage.modality, modality_cfg, modality_cfg.get("projector") or cfg.projector, adapter=shared)


def distributed() -> tuple[int, int]:
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # cpu=True: gloo process group under torchrun
    return state.process_index, state.num_processes


class MethodRun:
    def __init__(self, cfg, name: str, benchmark, stages: Sequence[Stage], text: dict, baseline: list, out: Path,
                 env_cfg: dict, action_names: Sequence[str] | None, memory_factory, writer=None):
        self.env_cfg = env_cfg
        self.cfg, self.name, self.stages, self.text, self.out = cfg, name, list(stages), text, out
        self.benchmark = benchmark
        out.mkdir(parents=True, exist_ok=True)
        self.method = cfg.methods[name]
        self.seed = int(cfg.seed)
        self.action_names, self.writer = action_names, writer
        self.shared = "shared" if self.method.adapters == "shared" else None
        self.rank, self.world = distributed()
        ckpt.restore_memory_file(out / "checkpoint", out / "replay.sqlite")  # the store as of the checkpoint
        self.memory = memory_factory(out / "replay.sqlite") if self.method.get("replay") else None
        self.mm = build_agent(cfg, self.method.get("routing"))
        self.generators: dict[str, Any] = {}  # output stage name -> its generator
        self.plugins = build_plugins(self.method, self.memory, text["train"])
        self.packing = bool(cfg.get("packing", True))  # bench/train_throughput.py turns it off for its "graft" row
        self.results: dict[str, Any] = {
            "stages": [s.name for s in stages], "acc_matrix": [], "pre_scores": [], "baseline": list(baseline),
            "text_scores": [], "text_before": None, "success_matrix": [], "gate": [], "loss_curves": {},
            "trainable_params": {}, "notes": [], "seconds": 0.0, "outputs": {},
        }
        self.optimizer: torch.optim.Optimizer | None = None
        self.started = time.perf_counter()

    # ---- checkpoints -----------------------------------------------------------------------------
    def save(self, stage: int, phase: str, step: int, start: dict | None = None) -> None:
        state = {"method": self.name, "stage": stage, "phase": phase, "step": step,
                 "results": {**self.results, "seconds": self.elapsed()}}
        extra = {f"start/{k}": v for k, v in (start or {}).items()}
        plugins = list(self.plugins) + ([_Tensors(extra)] if extra else [])
        ckpt.save_checkpoint(self.out / "checkpoint", self.mm, self.optimizer if phase != "done" else None,
                             plugins, self.memory, state, self.generators)

    def elapsed(self) -> float:
        return self.results["seconds"] + time.perf_counter() - self.started

    def resume(self) -> tuple[int, str, int, dict | None]:
        found = ckpt.read_checkpoint(self.out / "checkpoint")
        if found is None:
            return 0, "new", 0, None
        state, tensors = found
        self.results = state["results"]
        for stage in self.stages[: state["stage"] + 1]:
            self.graft(stage)
        ckpt.restore(self.mm, self.plugins, tensors, self.generators)
        start = {k[len(f"plugin/{len(self.plugins)}/start/"):]: v for k, v in tensors.items()
                 if k.startswith(f"plugin/{len(self.plugins)}/start/")}
        self._resume_optimizer = {k: v for k, v in tensors.items() if k.startswith("optim/")}
        if state["phase"] == "done":
            return state["stage"] + 1, "new", 0, None
        return state["stage"], state["phase"], state["step"], start

    def graft(self, stage: Stage) -> None:
        generator = graft_stage(self.mm, self.cfg, stage, self.shared)
        if generator is not None:
            self.generators[stage.name] = generator

    # ---- training ---------------------------------------------------------------------------------
    def draw(self, stage: Stage, phase: str, step: int) -> list[dict]:
        rng = np.random.default_rng([self.seed, stage.index, PHASES.index(phase), step])
        pool = stage.pt if phase == "pt" else stage.it
        batch = [pool[i] for i in rng.choice(len(pool), stage.batch_size, replace=len(pool) < stage.batch_size)]
        for plugin in self.plugins:
            batch = plugin.compose(self, stage, phase, batch, rng)
        return batch[self.rank :: self.world]

    def train_phase(self, stage: Stage, phase: str, steps: int, first_step: int, names) -> None:
        params = self.mm.set_trainable(names, phase)
        self.optimizer = torch.optim.AdamW(params, lr=float(stage.lr))
        if first_step and getattr(self, "_resume_optimizer", None):
            ckpt.load_optimizer(self.mm, self.optimizer, self._resume_optimizer, self.generators)
        self._resume_optimizer = None
        curve = self.results["loss_curves"].setdefault(stage.name, {}).setdefault(phase, [])
        del curve[first_step:]
        every = int(self.cfg.checkpoint_every)
        bar = tqdm(range(first_step, steps), desc=f"{self.name}:{stage.name}:{phase}", leave=False,
                   disable=not self.cfg.progress or self.rank > 0)
        # Padding-free rows and LM-head logits only at labelled positions (agent/packing.py): the same
        # loss, fewer FLOPs. LwF distils full-position logits, so it keeps the padded layout.
        fast = self.packing and not any(isinstance(p, LwFPlugin) for p in self.plugins)
        self.mm.train()  # walks every module: once per phase, then only if something switched it off
        for step in bar:
            if not self.mm.training:
                self.mm.train()
            examples = [to_example(r) for r in self.draw(stage, phase, step)]
            output = self.mm(examples, pack="auto" if fast else False, logits_at="labels" if fast else "all")
            loss = output.loss
            for plugin in self.plugins:
                extra = plugin.penalty(self, examples, output)
                if extra is not None:
                    loss = loss + extra
            loss.backward()
            self.average_gradients(params)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            value = loss.item()
            curve.append(round(value, 5))
            bar.set_postfix(loss=f"{value:.3f}")
            if self.writer is not None:
                self.writer.add_scalar(f"{self.name}/loss/{stage.name}/{phase}", value, step)
            if every and (step + 1) % every == 0 and step + 1 < steps:
                self.save(stage.index, phase, step + 1, self._start)
        self.mm.set_trainable(None)

    def average_gradients(self, params) -> None:
        if self.world == 1:
            return
        import torch.distributed as dist

        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= self.world

    # ---- the curriculum ---------------------------------------------------------------------------
    def evaluate(self, upto: int) -> dict:
        return evaluate_row(self.mm, self.stages, upto, self.text["test"], self.cfg.curriculum.eval,
                            self.env_cfg, self.action_names, self.seed, self.generators)

    def record(self, i: int, row: dict) -> None:
        T = len(self.stages)
        for name, metrics in row.get("outputs", {}).items():
            self.results["outputs"].setdefault(name, {}).setdefault("after", {})[self.stages[i].name] = metrics
        self.results["acc_matrix"] = self.results["acc_matrix"][:i] + [row["acc"] + [None] * (T - i - 1)]
        self.results["success_matrix"] = self.results["success_matrix"][:i] + [row["success"] + [None] * (T - i - 1)]
        self.results["text_scores"] = self.results["text_scores"][:i] + [row["text"]]

    def run(self) -> dict:
        if self.method.get("joint"):
            return self.run_joint()
        first, phase0, step0, self._start = self.resume()
        if first == 0 and phase0 == "new" and not any(s.kind == "text" for s in self.stages):
            self.results["text_before"] = accuracy(self.mm, self.text["test"])  # pretrained: before any graft
        for experience in self.benchmark.train_stream:  # avalanche experiences, one per stage
            i = experience.current_experience
            stage = self.stages[i]
            if i < first:
                continue
            if phase0 == "new":
                self.graft(stage)
                self.results["pre_scores"] = self.results["pre_scores"][:i] + [self.pre_score(stage)]
                self._start = {n: t.clone() for n, t in ckpt.learnable_state(self.mm, self.generators).items()}
                for plugin in self.plugins:
                    plugin.before_stage(self, stage)
            if stage.kind == "output":
                output_run.train_stage(self, stage, self.generators[stage.name], step0 if phase0 == "it" else 0)
            for phase in (PHASES if stage.kind != "output" else ()):
                steps = stage.pt_steps if phase == "pt" and stage.pt else stage.it_steps if phase == "it" else 0
                if phase0 not in ("new", phase) or not steps:
                    continue
                self.train_phase(stage, phase, int(steps), step0 if phase0 == phase else 0, stage.name)
                phase0 = "new"
            phase0, step0 = "new", 0
            self.record(i, self.evaluate(i))
            if stage.kind == "text" and self.results["text_before"] is None:
                self.results["text_before"] = self.results["text_scores"][i]
            self.gate(stage)
            for plugin in self.plugins:
                plugin.after_stage(self, stage)
            self.results["trainable_params"] = trainable_report(self.mm)
            self.save(i, "done", 0)
        return self.finish()

    def pre_score(self, stage: Stage) -> float:
        """The stage's score right after grafting, before training (FWT's R[j-1][j])."""
        if stage.kind != "output":
            return accuracy(self.mm, stage.test, self.action_names)
        metrics = output_run.evaluate_stage(self.mm, stage, self.generators[stage.name], self.cfg.curriculum.eval,
                                            self.env_cfg, self.seed)
        self.results["outputs"][stage.name] = {"kind": stage.output["kind"], "untrained": metrics, "after": {}}
        return metrics["score"]

    def gate(self, stage: Stage) -> None:
        budget, i = self.method.get("gate"), stage.index
        if not budget or i == 0:
            return
        R, text = self.results["acc_matrix"], self.results["text_scores"]
        drop = max(max(R[row][j] for row in range(j, i)) - R[i][j] for j in range(i))
        before = self.results["text_before"]
        retention = text[i] / before if before else None
        ok_forget = drop <= float(budget.max_forgetting)
        ok_text = retention is None or retention >= float(budget.min_text_retention)
        reason = (f"forgetting {drop:.3f} {'<=' if ok_forget else '>'} {budget.max_forgetting}; text retention "
                  f"{'n/a' if retention is None else f'{retention:.3f}'} {'>=' if ok_text else '<'} {budget.min_text_retention}")
        decision = "promoted" if ok_forget and ok_text else "rolled_back"
        if decision == "rolled_back":  # back to the stage's starting weights: the graft learns nothing
            with torch.no_grad():
                params = ckpt.named_parameters(self.mm, self.generators)
                for n, t in self._start.items():
                    params[n].copy_(t)
            self.record(i, self.evaluate(i))
        self.results["gate"].append({"stage": stage.name, "decision": decision, "reason": reason})

    def run_joint(self) -> dict:
        """All stages' data at once (the upper bound): every graft first, then PT per modality and
        one IT phase over the union of the stages' instructions."""
        done = ckpt.read_checkpoint(self.out / "checkpoint")
        if done and done[0]["phase"] == "done":
            self.results = done[0]["results"]
            return self.results
        for stage in self.stages:
            self.graft(stage)
        self._start = None
        for stage in self.stages:
            if stage.pt and stage.pt_steps:
                self.train_phase(stage, "pt", int(stage.pt_steps), 0, stage.name)
        lm = [s for s in self.stages if s.kind != "output"]
        union = Stage(0, "joint", None, {**lm[-1].settings, "it_steps": sum(int(s.it_steps) for s in lm), "text_mix": 0.0},
                      it=[r for s in lm for r in s.it])
        self.train_phase(union, "it", int(union.it_steps), 0, [s.name for s in lm])
        for stage in self.stages:  # output stages train after the union (their loss is not a text loss)
            if stage.kind == "output":
                self.results["outputs"][stage.name] = {"kind": stage.output["kind"], "after": {}}
                output_run.train_stage(self, stage, self.generators[stage.name])
                self.results["notes"].append(f"joint trains output stage '{stage.name}' after the union of the "
                                             f"text-loss stages")
        T = len(self.stages)
        row = self.evaluate(T - 1)
        for name, metrics in row.get("outputs", {}).items():
            self.results["outputs"][name]["after"][self.stages[-1].name] = metrics
        self.results["acc_matrix"] = [[None] * T for _ in range(T - 1)] + [row["acc"]]
        self.results["success_matrix"] = [[None] * T for _ in range(T - 1)] + [row["success"]]
        self.results["text_scores"] = [None] * (T - 1) + [row["text"]]
        self.results["notes"].append("joint trains once on all stages' data: only the final row is measured, "
                                     "so bwt, fwt and forgetting are undefined")
        self.results["trainable_params"] = trainable_report(self.mm)
        self.save(T - 1, "done", 0)
        return self.finish()

    def finish(self) -> dict:
        R, r = self.results["acc_matrix"], self.results
        full = all(v is not None for v in R[-1])
        r["avg_acc"] = average_accuracy([[v or 0.0 for v in row] for row in R]) if full else None
        staged = not self.method.get("joint")
        r["bwt"] = backward_transfer([[v or 0.0 for v in row] for row in R]) if staged else None
        r["forgetting"] = forgetting([[v or 0.0 for v in row] for row in R]) if staged else None
        # FWT reads R[j-1][j], the score on stage j before training it; a modality cannot be read before
        # it is grafted, so that score is taken right after grafting stage j, before its training.
        r["fwt"] = forward_transfer(_with_diagonal_below(R, r["pre_scores"]), r["baseline"]) if staged else None
        before, text = r["text_before"], [t for t in r["text_scores"] if t is not None]
        r["text_retention"] = text[-1] / before if before and text else None
        r["success_rate"] = mean_or_none(r["success_matrix"][-1]) if r["success_matrix"] else None
        r["seconds"] = round(self.elapsed(), 1)
        r["outputs"] = output_run.summarize(r.get("outputs") or {}, [s.name for s in self.stages])
        if self.rank == 0:  # the trained agent, loadable by `graft serve` / `graft rollout policy=`
            save_mmllm(self.mm, self.out / "agent", generators=self.generators)
            r["agent"] = str(self.out / "agent")
        return r


def _with_diagonal_below(R: list[list], pre: list[float]) -> list[list[float]]:
    m = [[v or 0.0 for v in row] for row in R]
    for j in range(1, len(m)):
        m[j - 1][j] = pre[j]
    return m


class _Tensors:
    """A plugin-shaped holder so extra tensors ride along in the checkpoint."""

    def __init__(self, tensors: dict):
        self._t = tensors

    def tensors(self) -> dict:
        return self._t

    def load_tensors(self, tensors: dict) -> None:
        self._t = tensors
