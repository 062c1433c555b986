"""Build an MM-LLM from a composed config, and save / load it as a folder of safetensors + JSON.

Config (configs/agent.yaml and its groups):
    backbone:   configs/backbone/<name>.yaml  (source tiny | pretrained | gguf)
    projector:  configs/projector/<name>.yaml (`_target_` + kwargs; in_dim/out_dim filled here)
    lora:       configs/lora/<name>.yaml
    modalities: {name: configs/modality/<name>.yaml}, grafted in order
    routing:    stacked | gated

Checkpoint folder:
    graft.json               the configs above, adapter order, versions
    tokenizer/               tokenizer.save_pretrained (placeholder tokens included)
    backbone.safetensors     base weights, only for `tiny` (random) backbones
    adapters/<name>/         peft format: PeftModel.from_pretrained(base, "adapters/<name>")
    modalities/<name>.safetensors, projectors/<name>.safetensors
    outputs/<name>.safetensors   output modalities: signal embeddings + output projector (graft.json also
                                 records each one's inputs, execute count and prompt template)
    generators/<name>/           their generators (`save_pretrained`, action normalisation stats included),
                                 when given: load_generators
    norm_stats.json          what each graft was trained on (observation specs + stats, action space +
                             stats, a generator's action scaling), versioned; checked by load_policy
                             (agent/norm_stats.py)
The folder holds everything acting needs: agent/loader.py `load_policy(folder, env)` makes the policy.
The folder is written under a temporary name and renamed into place, so a kill never leaves a
half-written checkpoint behind.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import hydra
from graft.agent.backbone import load_backbone
from graft.agent import norm_stats
from graft.agent.mmllm import MMLLM
from graft.agent.outputs import OutputHead
from graft.envs.atomic import write_dir_atomic
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer

FORMAT_VERSION = 1


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def build_modality(name: str, cfg: Mapping[str, Any]):
    cfg = {k: v for k, v in dict(_plain(cfg)).items() if k not in ("tokens", "projector")}  # the projector's (below)
    cfg["name"] = name
    return hydra.utils.instantiate(cfg, _convert_="all")


def bound(modality, mm: MMLLM):
    """`modality`, bound to `mm`'s vocabulary first if its encoder reads it (grid_words): its feature
    width is the LLM's, known only then."""
    if hasattr(modality, "bind"):
        modality.bind(mm)
    return modality


def build_projector(cfg: Mapping[str, Any], in_dim: int, out_dim: int):
    return hydra.utils.instantiate(dict(_plain(cfg)), in_dim=in_dim, out_dim=out_dim)


def graft_modality(mm: MMLLM, name: str, modality_cfg: Mapping, projector_cfg: Mapping,
                   adapter: str | None = None) -> None:
    """Build modality `name` and its projector from configs and graft them onto `mm`. A modality
    config's `tokens` (LLM tokens per observation) is passed to the projector: `tokens` for the
    pooling projectors, `num_queries` for the resampler."""
    modality = bound(build_modality(name, modality_cfg), mm)
    tokens = dict(_plain(modality_cfg)).get("tokens")
    if tokens:
        projector_cfg = dict(_plain(projector_cfg))
        projector_cfg["num_queries" if "Resampler" in projector_cfg["_target_"] else "tokens"] = int(tokens)
    projector = build_projector(projector_cfg, modality.feature_dim, mm.embed_dim)
    mm.graft(name, modality, projector, adapter=adapter)
    mm.graft_configs[name] = {"modality": _plain(modality_cfg), "projector": _plain(projector_cfg),
                              "adapter": mm.adapter_of[name]}


def build_output_head(name: str, output_cfg: Mapping[str, Any], embed_dim: int, cond_tokens: int, cond_dim: int,
                      init_std: float = 0.02, feature_dims: Mapping[str, int] | None = None) -> OutputHead:
    """An output head from `{signal_tokens: K, projector: {_target_: ...}, observe: [modality, ...]}`
    for a generator that reads conditioning `(cond_tokens, cond_dim)`; `feature_dims` gives the
    encoder width of every grafted input modality (needed when the head observes some)."""
    cfg = dict(_plain(output_cfg))
    k = int(cfg["signal_tokens"])
    observe = list(cfg.get("observe") or [])
    unknown = [m for m in observe if m not in (feature_dims or {})]
    if unknown:
        raise ValueError(f"output '{name}' observes {unknown}, which are not grafted input modalities "
                         f"(have {list(feature_dims or {})})")
    projector = hydra.utils.instantiate(dict(_plain(cfg["projector"])), in_dim=embed_dim, out_dim=int(cond_dim),
                                        in_tokens=k, out_tokens=int(cond_tokens))
    return OutputHead(name, k, embed_dim, projector, cond_tokens, cond_dim, init_std=init_std,
                      observe={m: int(feature_dims[m]) for m in observe})


def graft_output(mm: MMLLM, name: str, output_cfg: Mapping, cond_tokens: int, cond_dim: int,
                 adapter: str | None = None, *, inputs: Sequence[str] | None = None, execute: int | None = None,
                 prompt: str | None = None) -> None:
    """Graft output modality `name`: K signal tokens, an output projector into a generator's
    conditioning `(cond_tokens, cond_dim)`, and a LoRA adapter (its own, or `adapter`).

    What acting with it needs is recorded with it (graft.json, read by agent/loader.py): `inputs`, the
    input modalities its prompt shows (each already grafted); `execute`, the actions executed per
    planned chunk (action outputs); `prompt`, the template it is trained with ("{tags}" and
    "{mission}" slots). None leaves the loader's fallback: every grafted input the env emits,
    min(8, horizon), agent/chunk_policy.PROMPT."""
    inputs = None if inputs is None else [str(m) for m in inputs]
    unknown = [m for m in inputs or [] if m not in mm.modalities]
    if unknown or inputs == []:
        raise ValueError(f"output '{name}' reads inputs {inputs}; expected grafted input modalities "
                         f"(have {list(mm.modalities)})")
    if execute is not None and int(execute) < 1:
        raise ValueError(f"output '{name}': execute must be >= 1 actions per planned chunk, got {execute}")
    if prompt is not None and "{mission}" not in prompt:
        raise ValueError(f"output '{name}': the prompt template needs a {{mission}} slot, got {prompt!r}")
    table = mm.backbone.get_input_embeddings().weight
    head = build_output_head(name, output_cfg, mm.embed_dim, cond_tokens, cond_dim, init_std=float(table.std()),
                             feature_dims=_feature_dims(mm))
    mm.graft(name, output=head, adapter=adapter)
    mm.graft_configs[name] = {"modality": None, "projector": None, "adapter": mm.adapter_of[name],
                              "output": {"signal_tokens": head.num_tokens,
                                         "projector": _plain(dict(_plain(output_cfg))["projector"]),
                                         "cond_tokens": int(cond_tokens), "cond_dim": int(cond_dim),
                                         "observe": head.observed, "inputs": inputs,
                                         "execute": None if execute is None else int(execute), "prompt": prompt}}


def _feature_dims(mm: MMLLM) -> dict[str, int]:
    return {m: int(mod.feature_dim) for m, mod in mm.modalities.items()}


def graft_task(mm: MMLLM, name: str, adapter: str | None = None) -> None:
    """Graft a LoRA adapter with no encoder (e.g. the text-only skills stage)."""
    mm.graft(name, adapter=adapter)
    mm.graft_configs[name] = {"modality": None, "projector": None, "adapter": mm.adapter_of[name]}


def _new_mmllm(llm, tokenizer, backbone: Mapping, lora: Mapping, routing: str) -> MMLLM:
    """The one place an MMLLM is constructed, with what rebuilding it needs (`build_config`)."""
    mm = MMLLM(llm, tokenizer, _plain(lora), routing=routing)
    mm.build_config = {"backbone": _plain(backbone), "lora": _plain(lora), "routing": mm.routing}
    return mm


def build_mmllm(cfg: Mapping[str, Any]) -> MMLLM:
    """A fresh MM-LLM from `{backbone, lora, routing (default stacked), modalities: {name: cfg}, projector}`
    (`projector` only when a modality has none of its own; no modalities: a bare backbone + LoRA bank)."""
    llm, tokenizer = load_backbone(_plain(cfg["backbone"]))
    mm = _new_mmllm(llm, tokenizer, cfg["backbone"], cfg["lora"], cfg.get("routing") or "stacked")
    for name, modality_cfg in (cfg.get("modalities") or {}).items():
        graft_modality(mm, name, modality_cfg, modality_cfg.get("projector") or cfg["projector"])
    return mm


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("graft", "torch", "transformers", "peft"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def save_mmllm(mm: MMLLM, folder: str | Path, generators: Mapping[str, Any] | None = None) -> Path:
    """Write `mm` (and the generators of its output modalities, by output name) to `folder`."""
    folder = Path(folder)
    unknown = [n for n in (generators or {}) if n not in mm.outputs]
    if unknown:
        raise ValueError(f"generators {unknown} belong to no grafted output modality (outputs: {list(mm.outputs)})")

    def write(tmp: Path) -> None:
        meta = dict(mm.build_config, format_version=FORMAT_VERSION, adapters=list(mm.bank.names),
                    grafts=mm.graft_configs, versions=_versions())
        mm.tokenizer.save_pretrained(tmp / "tokenizer")
        if meta["backbone"]["source"] == "tiny":
            base = {k: v.contiguous() for k, v in mm.bank.base.state_dict().items() if "lora_" not in k}
            base = {k.replace(".base_layer.", "."): v for k, v in base.items()}
            save_file(_untie(base), tmp / "backbone.safetensors")
        mm.bank.save(tmp / "adapters")
        for sub, modules in (("modalities", mm.modalities), ("projectors", mm.projectors), ("outputs", mm.outputs)):
            (tmp / sub).mkdir()
            for name, module in modules.items():
                save_file({k: v.contiguous() for k, v in module.state_dict().items()}, tmp / sub / f"{name}.safetensors")
        for name, generator in (generators or {}).items():
            generator.save_pretrained(tmp / "generators" / name)
        if mm.norm_stats:
            (tmp / norm_stats.FILE).write_text(json.dumps(norm_stats.document(mm.norm_stats), indent=1))
        (tmp / "graft.json").write_text(json.dumps(meta, indent=2))

    write_dir_atomic(write, folder)
    return folder


def _untie(tensors: dict) -> dict:
    """safetensors refuses shared storage (tied embeddings): store each tensor once, by its own copy."""
    seen, out = {}, {}
    for k, v in tensors.items():
        key = (v.data_ptr(), v.shape)
        out[k] = v.clone() if key in seen else v
        seen[key] = k
    return out


def load_generators(folder: str | Path) -> dict[str, Any]:
    """The generators saved with an MM-LLM (`save_mmllm(..., generators=)`), by output name."""
    from graft.agent.generators import load_generator

    root = Path(folder) / "generators"
    return {p.name: load_generator(p) for p in sorted(root.iterdir()) if p.is_dir()} if root.is_dir() else {}


def load_mmllm(folder: str | Path) -> MMLLM:
    folder = Path(folder)
    meta_path = folder / "graft.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} is not a graft checkpoint (no graft.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint format {meta.get('format_version')} != supported {FORMAT_VERSION}")
    llm, _ = load_backbone(meta["backbone"])
    if meta["backbone"]["source"] == "tiny":
        missing, unexpected = llm.load_state_dict(load_file(folder / "backbone.safetensors"), strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise ValueError(f"backbone weights do not match the config: missing {missing}, unexpected {unexpected}")
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    mm = _new_mmllm(llm, tokenizer, meta["backbone"], meta["lora"], meta["routing"])
    for adapter in meta["adapters"]:
        mm.bank.load(adapter, folder / "adapters" / adapter)
    for name, g in meta["grafts"].items():
        if g["modality"] is not None:
            modality = bound(build_modality(name, g["modality"]), mm)
            modality.load_state_dict(load_file(folder / "modalities" / f"{name}.safetensors"))
            projector = build_projector(g["projector"], modality.feature_dim, mm.embed_dim)
            projector.load_state_dict(load_file(folder / "projectors" / f"{name}.safetensors"))
            mm.register_modality(name, modality, projector)
        elif g.get("output") is not None:
            out = g["output"]
            head = build_output_head(name, out, mm.embed_dim, out["cond_tokens"], out["cond_dim"],
                                     feature_dims=_feature_dims(mm))
            head.load_state_dict(load_file(folder / "outputs" / f"{name}.safetensors"))
            mm.register_output(name, head)
        mm.adapter_of[name] = g.get("adapter", name)
        mm.graft_configs[name] = g
    mm.norm_stats = norm_stats.read(folder)
    mm.set_trainable(None)
    return mm
