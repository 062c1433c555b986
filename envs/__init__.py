"""graft.envs: gymnasium environments that emit modality dicts, env configs with wrappers (factory),
their language and experts (found on the wrapper chain), data generation, vectorised rollouts and the
robot-controller side. Imports nothing else of graft's."""
