"""Training on TRL: supervised fine-tuning (sft), GRPO (grpo), the rewards, the resumable trainer lifecycle and the multi-process launch."""
