"""The policy: model loading and the tiny default (model), conversation encoding (encoding), the batched
rumination engine (rollout)."""
