"""Training on TRL: supervised fine-tuning (sft), GRPO (grpo), the rewards (rewards) and the resumable trainer
lifecycle (lifecycle)."""
