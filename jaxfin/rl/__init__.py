"""Reinforcement learning on the trainer: GRPO's losses (losses.py, equal to TRL's), rewards (rewards.py), prompts
and reward models (reward_model.py), prompts (prompts.py) and rollouts on the training mesh (rollout.py); the RL
step that puts them together is the trainer's (jaxfin/train/rl.py), run by `jaxfin train` with
`objective.type: grpo`."""
