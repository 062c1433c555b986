"""graft.agent: the five MM-LLM components, modalities, adapters, the action tokenizer and the policy.

May import `graft.envs` types only (see ARCHITECTURE.md)."""
