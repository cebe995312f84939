"""`LlavaSwapSFTTrainer`: TRL's SFTTrainer with modality-pure length grouping and a lean loss.

Differences from TRL's trainer (resume is the Trainer's own: `LlavaSwapForCausalLM.load_state_dict` reads the
checkpoint's on-disk tensor names):

* **Length grouping by modality.** With `train_sampling_strategy="group_by_length"` (a stage's `group_by_length`),
  batches hold image samples or text-only samples, never both (`sampler.py`, LLaVA's `group_by_modality_length`).
* **No stub cards.** `create_model_card` writes nothing: llava-swap's card is generated from the training record.
* **Loss on CPUs.** In a LLaVA sample most tokens carry no label: system prompt, image tokens, question, padding.
  TRL's fused LM head projects only the labelled positions through the LM head on CUDA/XPU, but on a CPU it projects
  every position and then zeroes most of them. Here, on CPUs (and Apple's MPS), only the positions whose next token is
  a label reach the LM head, through the model's `logits_to_keep`: the same token-weighted loss (gradients equal up to
  rounding), with TRL's `entropy`, `mean_token_accuracy` and `num_tokens` metrics logged as before. Everything else
  goes through TRL's own path unchanged: GPUs, batches whose labelled logits would outgrow `LOGITS_BUDGET`, losses TRL
  shapes itself (DFT, label smoothing, a custom `compute_loss_func`, MoE auxiliary losses), sequence/context/tensor
  parallelism and prompt-learning PEFT models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from trl import SFTTrainer

from . import compat
from .collator import IGNORE_INDEX
from .sampler import ModalityLengthGroupedSampler

# Most logits (rows x kept positions x vocabulary) the labelled-positions loss builds at once, about 256 MiB in
# float32: within it the logits stay smaller than TRL's tiles; past it TRL's chunked kernel does the work.
LOGITS_BUDGET = 2**26
METRIC_CHUNK = 1024


class LlavaSwapSFTTrainer(SFTTrainer):
    def create_model_card(self, *args, **kwargs) -> None:
        """No card in stage folders: TRL's names a base model of "None" there. A trained model's card comes from its
        training record (`llava-swap card`, `llava_swap.hub.write_card`)."""

    def _get_train_sampler(self, train_dataset=None):  # compat.TRAINER_SAMPLER_HOOK
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        columns = getattr(dataset, "column_names", None) or ()
        grouped = getattr(self.args, "train_sampling_strategy", None) == "group_by_length"
        if not grouped or self.args.length_column_name not in columns or "images" not in columns:
            return super()._get_train_sampler(train_dataset)
        return ModalityLengthGroupedSampler(
            dataset[self.args.length_column_name],
            [bool(images) for images in dataset["images"]],
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        keep = None if return_outputs else self._labelled_positions(inputs)
        if keep is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        model_inputs = {name: value for name, value in inputs.items() if name != "labels"}
        model_inputs.update(use_cache=False, logits_to_keep=keep)
        logits = model(**model_inputs).logits  # (rows, kept positions, vocab)
        targets = inputs["labels"][:, 1:][:, keep]
        labelled = targets != IGNORE_INDEX
        answer = targets[labelled]
        logits = logits[labelled].float()  # (labelled tokens, vocab)
        num_tokens = labelled.sum() if num_items_in_batch is None else num_items_in_batch
        # Clamped as in TRL, so a batch without labels gives a finite zero that still reaches every parameter
        loss = F.cross_entropy(logits, answer, reduction="sum") / torch.as_tensor(num_tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # Trainer leaves the cross-rank token weighting to the loss
        self._record_token_metrics(logits.detach(), answer, inputs)
        return loss

    def _labelled_positions(self, inputs: dict) -> torch.Tensor | None:
        """The positions to send through the LM head (those whose next token is a label in some row), or None where
        TRL's own path is the one to take."""
        if not self._plain_next_token_loss():
            return None
        labels = inputs["labels"]
        if labels.device.type not in ("cpu", "mps"):
            # CUDA / XPU: TRL's fused head already projects only the labelled positions, in tiles. XLA / Neuron: a
            # position count that changes every batch would recompile the graph every step.
            return None
        # One index list for the whole batch (the model keeps the same positions in every row): with padding-free
        # batches there is a single row, so it is exactly the labelled positions.
        keep = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
        vocab = self.model.get_output_embeddings().weight.shape[0]
        if labels.shape[0] * keep.numel() * vocab > LOGITS_BUDGET:
            return None  # these logits would outgrow TRL's tiles: let its chunked kernel score every position
        return keep

    def _plain_next_token_loss(self) -> bool:
        """Whether the loss is TRL's plain token-weighted NLL, the one computed here (anything else goes to TRL)."""
        parallel = self.accelerator.parallelism_config
        sharded_sequence = parallel is not None and (
            getattr(parallel, "cp_enabled", False) or getattr(parallel, "sp_enabled", False) or parallel.tp_size > 1
        )
        # Prompt tuning / P-tuning prepend virtual tokens and shift the labels inside the model's forward, which the
        # positions computed here would not follow
        peft_config = getattr(self.model, "active_peft_config", None)
        return (
            self.compute_loss_func is None
            and self.label_smoother is None
            and getattr(self.args, "loss_type", "nll") == "nll"
            and not getattr(self, "aux_loss_enabled", False)
            and not sharded_sequence
            and not getattr(peft_config, "is_prompt_learning", False)
            # The metrics TRL's `log` reports; an older or newer TRL without them keeps its own path
            and compat.trl_metrics_available(self)
        )

    @torch.no_grad()
    def _record_token_metrics(self, logits: torch.Tensor, answer: torch.Tensor, inputs: dict) -> None:
        """TRL's per-step metrics (entropy, mean token accuracy, tokens seen) from the labelled positions' logits."""
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        entropy_sum, num_correct = logits.new_zeros(()), answer.new_zeros(())
        for start in range(0, len(answer), METRIC_CHUNK):  # a chunk of rows at a time: no second (tokens, vocab) copy
            chunk = logits[start : start + METRIC_CHUNK]
            entropy_sum += torch.special.entr(torch.softmax(chunk, dim=-1)).sum()
            num_correct += (chunk.argmax(-1) == answer[start : start + METRIC_CHUNK]).sum()
        num_valid = gather(torch.tensor(answer.numel(), device=answer.device)).sum()
        entropy_sum, num_correct = gather(entropy_sum).sum(), gather(num_correct).sum()
        trained_tokens = 0
        if mode == "train":
            # Padding-free batches have no attention mask: every position of their single row is a real token
            if "attention_mask" in inputs:
                local = inputs["attention_mask"].sum()
            else:
                local = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
            trained_tokens = int(gather(local).sum())
        compat.record_trl_metrics(
            self,
            mode,
            trained_tokens=trained_tokens,
            entropy=(entropy_sum / num_valid).item() if num_valid > 0 else 0.0,
            mean_token_accuracy=(num_correct / num_valid).item() if num_valid > 0 else 0.0,
        )
