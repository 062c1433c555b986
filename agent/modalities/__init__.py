"""One file per modality; each is built from `configs/modality/<name>.yaml` by its `_target_`."""
