"""`LlavaSwapSFTTrainer`: TRL's SFTTrainer with a strict resume and a loss that scores only the answer tokens.

Two differences from TRL's trainer, both invisible in the results:

* **Resume.** Checkpoints are saved in the native llava on-disk layout; the Trainer's own resume calls
  `load_state_dict` with those keys, matches none of them, and only warns: the run would go on from the wrong weights.
  Loading through `from_pretrained` applies the key mapping, and the strict load proves every tensor came back.
* **Loss.** In a LLaVA sample most tokens carry no label: system prompt, image tokens, question, padding. TRL's fused
  LM head projects only the labelled positions through the LM head on Triton devices, but everywhere else (CPUs, and
  Neuron, where it keeps tile shapes fixed) it projects every position and then zeroes most of them. Here only the
  positions whose next token is a label reach the LM head, on every device, through the model's `logits_to_keep`.
  The loss is the same token-weighted mean, and TRL's `entropy`, `mean_token_accuracy` and `num_tokens` metrics are
  logged as before. Losses TRL shapes itself (DFT, label smoothing, a custom `compute_loss_func`, MoE auxiliary
  losses, sequence/context/tensor parallelism) go through TRL's own path unchanged.
"""

from __future__ import annotations

import torch
from trl import SFTTrainer

from .collator import IGNORE_INDEX
from .modeling_llava_swap import LlavaSwapForCausalLM


class LlavaSwapSFTTrainer(SFTTrainer):
    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        target = self.accelerator.unwrap_model(model if model is not None else self.model)
        sharded = self.is_fsdp_enabled or self.is_deepspeed_enabled  # their own checkpoint formats
        if sharded or not isinstance(target, LlavaSwapForCausalLM):  # PEFT: adapter checkpoints load as usual
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = LlavaSwapForCausalLM.from_pretrained(resume_from_checkpoint, dtype=target.dtype)
        target.load_state_dict(saved.state_dict(), strict=True)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs or not self._scores_labels_only():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        targets = inputs["labels"][:, 1:]  # position p predicts token p + 1
        # One index list for the whole batch (the model keeps the same positions in every row): with padding-free
        # batches there is a single row, so it is exactly the labelled positions.
        keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
        model_inputs = {name: value for name, value in inputs.items() if name != "labels"}
        model_inputs.update(use_cache=False, logits_to_keep=keep)
        logits = model(**model_inputs).logits
        targets = targets[:, keep]
        labelled = targets != IGNORE_INDEX
        log_probs = torch.log_softmax(logits[labelled].float(), dim=-1)  # (labelled tokens, vocab)
        answer = targets[labelled]
        token_log_probs = log_probs.gather(-1, answer[:, None]).squeeze(-1)
        num_tokens = labelled.sum() if num_items_in_batch is None else num_items_in_batch
        # Clamped as in TRL, so a batch without labels gives a finite zero that still reaches every parameter
        loss = -token_log_probs.sum() / torch.as_tensor(num_tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # Trainer leaves the cross-rank token weighting to the loss
        self._record_token_metrics(log_probs.detach(), answer, inputs)
        return loss

    def _scores_labels_only(self) -> bool:
        """Whether the loss is TRL's plain token-weighted NLL, the one computed here (anything else goes to TRL)."""
        parallel = self.accelerator.parallelism_config
        sharded_sequence = parallel is not None and (parallel.cp_enabled or parallel.sp_enabled or parallel.tp_size > 1)
        return (
            self.compute_loss_func is None
            and self.label_smoother is None
            and getattr(self.args, "loss_type", "nll") == "nll"
            and not getattr(self, "aux_loss_enabled", False)
            and not sharded_sequence
            # The metrics TRL's `log` reports; an older or newer TRL without them keeps its own path
            and hasattr(self, "_metrics")
            and hasattr(self, "_total_train_tokens")
        )

    def _record_token_metrics(self, log_probs: torch.Tensor, answer: torch.Tensor, inputs: dict) -> None:
        """TRL's per-step metrics, from the labelled positions' log-probabilities."""
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        entropy = torch.special.entr(log_probs.exp()).sum(-1)  # 0 where a probability underflows to 0
        num_valid = gather(torch.tensor(answer.numel(), device=answer.device)).sum()
        entropy_sum = gather(entropy.sum()).sum()
        num_correct = gather((log_probs.argmax(-1) == answer).sum()).sum()
        self._metrics[mode]["entropy"].append((entropy_sum / num_valid).item() if num_valid > 0 else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append((num_correct / num_valid).item() if num_valid > 0 else 0.0)
        if mode == "train":
            # Padding-free batches have no attention mask: every position of their single row is a real token
            if "attention_mask" in inputs:
                local = inputs["attention_mask"].sum()
            else:
                local = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
            self._total_train_tokens += int(gather(local).sum())
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
