"""Learners: GRPO (TRL GRPOTrainer) and SFT (TRL SFTTrainer), plain torch or DeepSpeed ZeRO under a launcher."""
