"""Reinforcement learning on the trainer: GRPO's losses (losses.py, equal to TRL's), rewards (rewards.py), prompts
(prompts.py), rollouts on the training mesh (rollout.py) and the RL step (loop.py), run by `jaxfin train` with
`objective.type: grpo`."""
