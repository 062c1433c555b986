"""One method's run through a curriculum: graft → train → evaluate → gate → remember, per stage.

`MethodRun(cfg, name, benchmark, stages, text, baselines, out, env_cfg, action_names, memory_factory,
writer, rollout_seeds, probes).run()` returns the method's results (the `report.json` entry): the
full accuracy matrix R (cells above the diagonal scored blind), the same cells with observations
shuffled, next-action imitation, success cells on the held-out rollout seeds, the validation
matrix the gate decides on, and the text probes (curricula/retention.py) after every stage. The loop is the avalanche shape — a
strategy walking a stream of experiences, with plugins for replay, text mixing, EWC and LwF
(curricula/plugins.py) — over an MM-LLM instead of a classifier. Every stage kind (curricula/stages)
trains through the same engine (curricula/engine.py); the generators of output stages live in
`self.generators` and ride along in checkpoints and the saved agent.

Resume: the checkpoint (curricula/checkpoint.py) says where the run was (stage, phase, step) and
how many adds the replay memory had seen; the memory is rolled back to that add, so a run resumed
after SIGKILL trains on exactly the batches the uninterrupted run drew.
"""
from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from graft.agent.build import save_mmllm
from graft.agent.training import trainable_report
from graft.curricula import checkpoint as ckpt
from graft.curricula import engine
from graft.curricula.metrics import average_accuracy, backward_transfer, drop_limit, forgetting, forward_transfer, rate
from graft.curricula.plugins import build_plugins
from graft.curricula.stages import Stage, TextLossStage, fresh_agent, union_stage


class MethodRun:
    def __init__(self, cfg, name: str, benchmark, stages: Sequence[Stage], text: dict, baselines: list[dict], out: Path,
                 env_cfg: dict, action_names: Sequence[str] | None, memory_factory, writer=None,
                 rollout_seeds: Sequence[int] = (), probes=None):
        self.cfg, self.name, self.stages, self.text, self.out = cfg, name, list(stages), text, out
        self.benchmark, self.env_cfg, self.action_names, self.writer = benchmark, env_cfg, action_names, writer
        self.rollout_seeds, self.probes = list(rollout_seeds), probes  # probes: curricula/retention.TextProbes
        self.measured: dict[tuple[str, str], Any] = {}  # (what, weights fingerprint) -> value (see reuse)
        out.mkdir(parents=True, exist_ok=True)
        self.method = cfg.methods[name]
        self.seed = int(cfg.seed)
        self.shared = "shared" if self.method.adapters == "shared" else None
        self.rank, self.world = engine.distributed()
        self.memory = memory_factory(out / "replay.sqlite") if self.method.get("replay") else None
        self.mm = fresh_agent(cfg, self.method.get("routing"))
        if probes is not None:  # nothing grafted yet: the text probes of the base model are measured
            base = self.mm.fingerprint([])
            self.measured.update({(f"text:{split}", base): value for split, value in probes.before.items()})
        self.generators: dict[str, Any] = {}  # output stage name -> its generator
        self.plugins = build_plugins(self.method, self.memory, text["train"])
        # padding-free packing (bench/train_throughput.py turns it off); not with plugins that read all logits
        self.fast_text_loss = bool(cfg.get("packing", True)) and not any(p.needs_logits for p in self.plugins)
        self.results: dict[str, Any] = {
            "stages": [s.name for s in stages], "acc_matrix": [], "shuffled_matrix": [], "imitation_matrix": [],
            "success_matrix": [], "val_matrix": [], "hallucination_matrix": [], "pre_scores": [None] * len(stages),
            "baseline": [b.get("blind") for b in baselines], "text_probes": {}, "text_probes_val": {},
            "gate": [], "loss_curves": {}, "trainable_params": {}, "notes": [], "seconds": 0.0, "outputs": {},
            "seconds_by_part": {"train": 0.0, "evaluate": 0.0, "rollouts": 0.0},
        }
        from graft.agent.training import training_precision

        # measured once per process (cached), kept in the results so a resumed run trains the same way
        self.results["precision"] = training_precision(str(cfg.get("precision", "auto")), self.mm.embed_dim)
        self.optimizer: torch.optim.Optimizer | None = None
        self.resume_optimizer: dict | None = None
        self.start_weights: dict | None = None  # the stage's starting weights (the gate rolls back to them)
        self.untrained: dict | None = None  # the current stage's evaluation right after grafting (for plots)
        self.started = time.perf_counter()

    def log(self, message: str) -> None:
        if self.rank == 0 and self.cfg.get("progress", True):
            print(f"[{self.name}] {message}", flush=True)

    # ---- checkpoints -----------------------------------------------------------------------------
    def save(self, stage: int, phase: str, step: int) -> None:
        state = {"method": self.name, "stage": stage, "phase": phase, "step": step,
                 "results": {**self.results, "seconds": self.elapsed()},
                 "memory_adds": len(self.memory.adds) if self.memory is not None else 0}
        extra = {f"start/{k}": v for k, v in (self.start_weights or {}).items()} if phase != "done" else {}
        ckpt.save_checkpoint(self.out / "checkpoint", self.mm, self.optimizer if phase != "done" else None,
                             self.plugins, state, self.generators, extra)

    @contextlib.contextmanager
    def timed(self, part: str):
        """Adds the block's wall time to results["seconds_by_part"][part] (train | evaluate, which
        includes rollouts | rollouts): where a run's time goes."""
        began = time.perf_counter()
        try:
            yield
        finally:
            parts = self.results.setdefault("seconds_by_part", {})
            parts[part] = round(parts.get(part, 0.0) + time.perf_counter() - began, 1)

    def train(self, stage: Stage, phase: str, steps: int, start: int = 0) -> None:
        with self.timed("train"):
            engine.train(self, stage, phase, steps, start)

    def elapsed(self) -> float:
        return self.results["seconds"] + time.perf_counter() - self.started

    def resume(self) -> tuple[int, str, int]:
        found = ckpt.read_checkpoint(self.out / "checkpoint")
        if found is None:
            if self.memory is not None:
                self.memory.rollback(0)  # a store left by a run killed before its first checkpoint
            return 0, "new", 0
        state, tensors = found
        self.results = state["results"]
        if self.memory is not None:
            self.memory.rollback(int(state.get("memory_adds", 0)))
        for stage in self.stages[: state["stage"] + 1]:
            self.graft(stage)
        ckpt.restore(self.mm, self.plugins, tensors, self.generators)
        self.start_weights = {k[len("start/"):]: v for k, v in tensors.items() if k.startswith("start/")} or None
        self.resume_optimizer = {k: v for k, v in tensors.items() if k.startswith("optim/")}
        if state["phase"] == "done":
            return state["stage"] + 1, "new", 0
        return state["stage"], state["phase"], state["step"]

    def graft(self, stage: Stage) -> None:
        generator = stage.graft_seeded(self.mm, self.cfg, self.shared)
        if generator is not None:
            self.generators[stage.name] = generator

    # ---- the curriculum ---------------------------------------------------------------------------
    def evaluate(self, upto: int) -> dict:
        """Scores after training stage `upto`: every seen stage (with its controls and rollouts),
        every later stage blind, the validation split and the text probes."""
        self.log(f"evaluating {upto + 1} stage(s) (+ {len(self.stages) - upto - 1} blind), val split and text probes")
        with self.timed("evaluate"):
            return self._evaluate(upto)

    def _evaluate(self, upto: int) -> dict:
        seen = self.stages[: upto + 1]
        reads = lambda s: [s.modality] if s.modality else []  # noqa: E731
        rows = [self.reuse(f"{s.name}:test", reads(s), lambda s=s: s.evaluate(self), stage=s) for s in seen]
        later = [self.reuse(f"{s.name}:blind", [], lambda s=s: s.evaluate_blind(self), stage=s)
                 for s in self.stages[upto + 1:]]
        probes = {}
        if self.probes is not None:
            probes = {split: self.reuse(f"text:{split}", [], lambda split=split: self.probes.measure(self.mm, split))
                      for split in ("val", "test")}
            inputs = list(self.mm.modalities)  # the same text with every input adapter on (test split)
            probes["adapters_on"] = self.reuse("text:test", inputs, observed=False, measure=lambda: self.probes.measure(
                self.mm, "test", adapters_on=True)) if inputs else None
        return {"acc": [r["score"] for r in rows] + later, "rows": rows, "probes": probes,
                "shuffled": [r.get("shuffled") for r in rows], "imitation": [r.get("imitation") for r in rows],
                "success": [r["success"] for r in rows], "hallucination": [r.get("hallucination") for r in rows],
                "val": [self.reuse(f"{s.name}:val", reads(s), lambda s=s: s.evaluate_val(self), stage=s) for s in seen],
                "outputs": {s.name: r["metrics"] for s, r in zip(self.stages, rows) if r["metrics"]}}

    def reuse(self, key: str, present: Sequence[str], measure, stage: Stage | None = None, observed: bool = True):
        """`measure()`, or its earlier value when every learnable weight that inputs holding `present`
        reach is unchanged since (`MMLLM.fingerprint`): under gated routing an earlier modality's
        scores, its rollouts and the text probes stay what they were while a later adapter trains,
        so they are not measured again. Output stages (their generators are not fingerprinted) are
        always measured."""
        if stage is not None and not isinstance(stage, TextLossStage):
            return measure()
        key_now = (key, self.mm.fingerprint(present, observed))
        if key_now not in self.measured:
            self.measured[key_now] = measure()
        else:
            self.results["reused_evaluations"] = self.results.get("reused_evaluations", 0) + 1
            self.log(f"{key}: weights unchanged since it was measured, reusing the value")
        return copy.deepcopy(self.measured[key_now])

    def record(self, i: int, row: dict) -> None:
        T, r = len(self.stages), self.results
        for name, metrics in row.get("outputs", {}).items():
            r["outputs"].setdefault(name, {}).setdefault("after", {})[self.stages[i].name] = metrics
        r["acc_matrix"] = r["acc_matrix"][:i] + [row["acc"]]
        for key, values in (("shuffled_matrix", "shuffled"), ("imitation_matrix", "imitation"),
                            ("success_matrix", "success"), ("val_matrix", "val"), ("hallucination_matrix", "hallucination")):
            r[key] = r.get(key, [])[:i] + [row[values] + [None] * (T - i - 1)]
        # the key: per stage, its row right after its own training ({pope_f1, yes_ratio, chair_i, chair_s, ...})
        r["hallucination"] = [r["hallucination_matrix"][j][j] if j < len(r["hallucination_matrix"]) else None
                              for j in range(T)]
        for split, key in (("test", "text_probes"), ("val", "text_probes_val"), ("adapters_on", "text_probes_on")):
            for probe, value in (row["probes"].get(split) or {}).items():
                r.setdefault(key, {})
                r[key][probe] = (r[key].get(probe) or [None] * T)[:i] + [value] + [None] * (T - i - 1)
        for stage, cell in zip(self.stages, row.get("rows", [])):  # say why a success cell stays empty
            if cell.get("unscored"):
                r.setdefault("unscored_success", {})[stage.name] = cell["unscored"]
            if cell.get("groups"):  # per question group: {stage: {after stage: {group: {items, score, shuffled}}}}
                r.setdefault("question_groups", {}).setdefault(stage.name, {})[self.stages[i].name] = cell["groups"]
        scores = ", ".join(f"{s.name} {v:.3f}" + (f" (shuffled {c:.3f})" if c is not None else "")
                           for s, v, c in zip(self.stages, row["acc"], row["shuffled"]))
        test = row["probes"].get("test") or {}
        text = "; text " + ", ".join(f"{k} {v:.3f}" for k, v in test.items() if k != "items") if test else ""
        self.log(f"after {self.stages[i].name}: {scores}{text}")

    def run(self) -> dict:
        if self.method.get("joint"):
            return self.run_joint()
        first, phase0, step0 = self.resume()
        for experience in self.benchmark.train_stream:  # avalanche experiences, one per stage
            i = experience.current_experience
            stage = self.stages[i]
            if i < first:
                continue
            if phase0 == "new":
                self.log(f"stage {i + 1}/{len(self.stages)}: {stage.name} ({stage.kind})")
                self.graft(stage)
                if stage.evaluates_untrained:
                    self.untrained = pre = stage.evaluate(self)
                    self.results["pre_scores"][i] = pre["score"]
                    if pre["metrics"]:
                        self.results["outputs"][stage.name] = {"kind": pre["kind"], "untrained": pre["metrics"],
                                                               "after": {}}
                self.start_weights = {n: t.clone() for n, t in ckpt.learnable_state(self.mm, self.generators).items()}
                for plugin in self.plugins:
                    plugin.before_stage(self, stage)
            for phase in stage.phases:
                steps = stage.steps(phase)
                if phase0 not in ("new", phase) or not steps:
                    continue
                self.train(stage, phase, steps, step0 if phase0 == phase else 0)
                phase0 = "new"
            phase0, step0 = "new", 0
            row = self.evaluate(i)
            self.record(i, row)
            if self.rank == 0 and self.untrained is not None:
                stage.plot(self, self.untrained, row["rows"][i])
            self.untrained = None  # its samples (generated images) are not kept past the stage
            self.gate(stage)
            for plugin in self.plugins:
                plugin.after_stage(self, stage)
            self.results["trainable_params"] = trainable_report(self.mm)
            self.save(i, "done", 0)
        return self.finish()

    def gate(self, stage: Stage) -> None:
        """Promote the stage, or roll it back to its starting weights, on the VALIDATION split: an
        earlier stage's val score may drop by `max_forgetting`, or by `significance_z` standard
        errors when that is larger (metrics.drop_limit); the text probes by their budget, from the
        first stage on (a later stage must not carry the blame for an earlier one's text loss)."""
        budget, i = self.method.get("gate"), stage.index
        if not budget or (i == 0 and self.probes is None):  # the first stage is judged by the text probes only
            return
        V, z = self.results["val_matrix"], float(budget.get("significance_z", 2.0))
        ok, reasons = True, []
        for j in range(i):
            seen = [V[row][j] for row in range(j, i) if V[row][j] is not None]
            if not seen or V[i][j] is None:
                continue
            best, now = max(seen), V[i][j]
            limit = drop_limit(best, now, len(self.stages[j].val), float(budget.max_forgetting), z)
            ok = ok and best - now <= limit
            reasons.append(f"{self.stages[j].name} val {best:.3f}→{now:.3f} (may drop {limit:.3f})")
        if self.probes is not None and self.results["text_probes_val"]:
            now = {k: v[i] for k, v in self.results["text_probes_val"].items()}
            text_ok, why = self.probes.gate_check(now, budget)
            ok = ok and text_ok
            reasons.append(why)
        if not reasons:
            reasons.append("no validation split to judge by")
        decision = "promoted" if ok else "rolled_back"
        reason = "; ".join(reasons)
        self.log(f"gate: {stage.name} {decision} ({reason})")
        if decision == "rolled_back":  # back to the stage's starting weights: the graft learns nothing
            with torch.no_grad():
                params = ckpt.named_parameters(self.mm, self.generators)
                for n, t in self.start_weights.items():
                    params[n].copy_(t)
            self.record(i, self.evaluate(i))
        self.results["gate"].append({"stage": stage.name, "decision": decision, "reason": reason})

    def run_joint(self) -> dict:
        """All stages' data at once (the upper bound): every graft first, then PT per modality and
        one IT phase over the union of the text-loss stages; output stages train after it."""
        done = ckpt.read_checkpoint(self.out / "checkpoint")
        if done and done[0]["phase"] == "done":
            self.results = done[0]["results"]
            return self.results
        for stage in self.stages:
            self.graft(stage)
        for stage in self.stages:
            for phase in ("align", "pt"):
                if phase in stage.phases and stage.steps(phase):
                    self.train(stage, phase, stage.steps(phase))
        union = union_stage(self.stages)
        self.train(union, "it", union.steps("it"))
        for stage in self.stages:  # other kinds train after the union (their loss is not a text loss)
            if not isinstance(stage, TextLossStage):
                self.train(stage, "it", stage.steps("it"))
                self.results["notes"].append(f"joint trains {stage.kind} stage '{stage.name}' after the union of "
                                             "the text-loss stages")
        T = len(self.stages)
        row = self.evaluate(T - 1)
        for stage, r in zip(self.stages, row["rows"]):
            if r["metrics"]:
                self.results["outputs"][stage.name] = {"kind": r["kind"]}  # record() adds its "after" metrics
        self.record(T - 1, row)
        for key in ("acc_matrix", "shuffled_matrix", "imitation_matrix", "success_matrix", "val_matrix"):
            self.results[key] = [[None] * T for _ in range(T - 1)] + self.results[key][-1:]
        self.results["notes"].append("joint trains once on all stages' data: only the final row is measured, "
                                     "so bwt, fwt and forgetting are undefined")
        self.results["trainable_params"] = trainable_report(self.mm)
        self.save(T - 1, "done", 0)
        return self.finish()

    def finish(self) -> dict:
        r = self.results
        R, C = r["acc_matrix"], r["shuffled_matrix"]
        staged = not self.method.get("joint")
        r["avg_acc"] = average_accuracy(R)
        final = [(a, c) for a, c in zip(R[-1], C[-1]) if a is not None and c is not None]
        r["avg_shuffled"] = sum(c for _, c in final) / len(final) if final else None
        r["perception_gain"] = sum(a - c for a, c in final) / len(final) if final else None
        r["bwt"] = backward_transfer(R) if staged else None
        r["forgetting"] = forgetting(R) if staged else None
        r["fwt"] = forward_transfer(R, r["baseline"]) if staged else None
        imitation = [v for v in r["imitation_matrix"][-1] if v is not None]
        r["imitation"] = sum(imitation) / len(imitation) if imitation else None
        rates = [rate(c) for c in r["success_matrix"][-1] if c is not None]
        r["success_rate"] = sum(rates) / len(rates) if rates else None
        r["text_retention"] = None
        if self.probes is not None and r["text_probes"].get("knowledge"):
            last = {k: v[-1] for k, v in r["text_probes"].items()}
            r.update(self.probes.retention(last))
            r["text_retention"] = r["knowledge_retention"]
        if self.probes is not None and (r.get("text_probes_on") or {}).get("knowledge"):
            last = {k: v[-1] for k, v in r["text_probes_on"].items() if v[-1] is not None}
            r.update({f"{k}_adapters_on": v for k, v in self.probes.retention(last).items()})
        r["seconds"] = round(self.elapsed(), 1)
        r["outputs"] = summarize_outputs(r.get("outputs") or {}, [s.name for s in self.stages])
        if self.rank == 0:  # the trained agent, loadable by `graft serve` / `graft rollout policy=`
            save_mmllm(self.mm, self.out / "agent", generators=self.generators)
            r["agent"] = str(self.out / "agent")
        return r


def summarize_outputs(outputs: dict, stages: Sequence[str]) -> dict[str, dict]:
    """Per output stage: untrained, trained (right after its stage) and final metrics."""
    return {name: {**entry, "trained": (entry.get("after") or {}).get(name),
                   "final": (entry.get("after") or {}).get(stages[-1]) if stages else None}
            for name, entry in outputs.items()}
