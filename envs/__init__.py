"""graft.envs: gymnasium environments that emit modality dicts, experts, data generation,
vectorised rollouts and the robot-controller side. Imports nothing else of graft's."""
