"""GPU training throughput at a realistic shape: tokens/s and model FLOPs utilisation (MFU), both paths.

    python benchmarks/gpu_throughput.py                 # LLaMA-3-shaped 1B LM + CLIP-L/336, bf16, sdpa, one GPU
    python benchmarks/gpu_throughput.py --lm-size 8b    # LLaMA-3-8B shape (needs ~80 GB with AdamW states)
    python benchmarks/gpu_throughput.py --tiny          # the code path on any machine (CPU, float32, tiny shapes)

Weights are random (from configs only: nothing is downloaded). (a) baseline: the vision encoder runs on every batch
and batches are padded to their longest sample, as with transformers' native Llava + TRL's collator; (b) llava-swap:
encoder features computed once up front (the cache) and padding-free batches. Both take optimizer steps on the same
synthetic batches (576 image tokens + a 20-200-token conversation per sample, its second half the answer; only
answer positions go through the LM head, as with TRL's fused head on a GPU). MFU: the useful training FLOPs per
second (6 per trainable parameter per token; the LM head on answer tokens only, the embedding lookup not at all; the
encoder's repeated forward passes in the baseline are not counted as useful), over the card's measured matmul rate
in the training dtype (printed too).
"""

from __future__ import annotations

import argparse
import time

import torch

LM_SHAPES = {  # LLaMA-3 family shapes: hidden, intermediate, layers, heads, kv heads
    "1b": (2048, 8192, 16, 32, 8),
    "8b": (4096, 14336, 32, 32, 8),
    "tiny": (64, 224, 2, 4, 2),
}


def matmul_rate(device, dtype, size: int = 8192, repeats: int = 20) -> float:
    """Measured dense matmul FLOP/s of this device and dtype (the MFU denominator)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(args, device, dtype):
    from transformers import CLIPVisionConfig, LlamaConfig

    from llava_swap import LlavaSwapConfig, LlavaSwapForCausalLM

    hidden, intermediate, layers, heads, kv_heads = LM_SHAPES["tiny" if args.tiny else args.lm_size]
    text = LlamaConfig(
        hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, vocab_size=128_257, max_position_embeddings=8192, rope_theta=500_000.0,
    )  # fmt: skip
    if args.tiny:
        vision = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=64, intermediate_size=256,
                                  num_hidden_layers=2, num_attention_heads=4)  # fmt: skip
    else:  # CLIP ViT-L/14 at 336 px: 576 patches
        vision = CLIPVisionConfig(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096,
                                  num_hidden_layers=24, num_attention_heads=16)  # fmt: skip
    patches = (vision.image_size // vision.patch_size) ** 2
    config = LlavaSwapConfig(vision_config=vision, text_config=text, image_token_id=128_256, image_seq_length=patches)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = LlavaSwapForCausalLM(config).to(dtype)
    model.vision_tower.requires_grad_(False)
    return model, patches, vision.image_size


def batches(args, patches: int, image_size: int, device):
    """The same synthetic batches for both paths: images and conversations of 20-200 text tokens."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(args.steps):
        lengths = torch.randint(20, 201, (args.batch_size,), generator=generator).tolist()
        pixels = torch.randn(args.batch_size, 3, image_size, image_size, generator=generator)
        texts = [torch.randint(0, 128_000, (length,), generator=generator) for length in lengths]
        yield pixels.to(device), texts


def sample_ids(text: torch.Tensor, patches: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and labels: BOS, the image tokens, then the conversation, whose second half is the answer."""
    ids = torch.cat([torch.tensor([128_000]), torch.full((patches,), 128_256), text])
    labels = ids.clone()
    labels[: 1 + patches + len(text) // 2] = -100  # only the answer is learnt
    return ids, labels


def loss_on_answers(model, labels: torch.Tensor, **inputs) -> torch.Tensor:
    """Token-weighted NLL with only the labelled positions through the LM head (TRL's fused head does the same)."""
    targets = labels[:, 1:]
    keep = (targets != -100).any(dim=0).nonzero().squeeze(-1)
    logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits
    targets = targets[:, keep]
    return torch.nn.functional.cross_entropy(logits[targets != -100].float(), targets[targets != -100])


def run(model, args, patches, image_size, device, dtype, cached: bool) -> tuple[float, int, int]:
    """Seconds, sequence tokens and answer tokens of `args.steps` optimizer steps."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    features = {}
    if cached:  # the cache: one encoder pass per distinct image, before training
        with torch.no_grad():
            for step, (pixels, _) in enumerate(batches(args, patches, image_size, device)):
                features[step] = model.get_vision_features(pixels.to(dtype))
    tokens = answers = 0
    _sync(device)
    start = time.perf_counter()
    for step, (pixels, texts) in enumerate(batches(args, patches, image_size, device)):
        samples = [sample_ids(text, patches) for text in texts]
        if cached:  # one unpadded sequence, per-sample positions
            ids = torch.cat([ids for ids, _ in samples])[None].to(device)
            labels = torch.cat([labels for _, labels in samples])[None].to(device)
            positions = torch.cat([torch.arange(len(ids)) for ids, _ in samples])[None].to(device)
            loss = loss_on_answers(model, labels, input_ids=ids, position_ids=positions, image_features=features[step])
        else:  # padded to the longest sample, encoder every time
            length = max(len(ids) for ids, _ in samples)
            ids = torch.zeros(len(samples), length, dtype=torch.long)
            labels = torch.full((len(samples), length), -100, dtype=torch.long)
            mask = torch.zeros(len(samples), length, dtype=torch.long)
            for row, (sample, sample_labels) in enumerate(samples):
                ids[row, : len(sample)], labels[row, : len(sample)], mask[row, : len(sample)] = sample, sample_labels, 1
            ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
            loss = loss_on_answers(model, labels, input_ids=ids, attention_mask=mask, pixel_values=pixels.to(dtype))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += sum(len(ids) for ids, _ in samples)
        answers += sum(int((labels != -100).sum()) for _, labels in samples)
    _sync(device)
    return time.perf_counter() - start, tokens, answers


def training_flops(model, tokens: int, answers: int) -> float:
    """6 FLOPs per parameter per token: the trainable body on every token, the LM head on the answer tokens only
    (the input embedding is a lookup, no matmul)."""
    head, embedding = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    body = sum(p.numel() for p in model.parameters() if p.requires_grad and p is not head and p is not embedding)
    return 6 * body * tokens + 6 * head.numel() * answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm-size", choices=("1b", "8b"), default="1b")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tiny", action="store_true", help="tiny shapes, float32, any device: checks the code path")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float32 if args.tiny or device.type == "cpu" else torch.bfloat16
    peak = matmul_rate(device, dtype, size=512 if args.tiny else 8192)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"gpu throughput: {name}, {dtype}, measured matmul rate {peak / 1e12:.1f} TFLOP/s")
    print(f"{'path':<11} {'tokens/s':>10} {'MFU':>7}")
    for label, cached in (("baseline", False), ("llava_swap", True)):
        model, patches, image_size = build(args, device, dtype)
        seconds, tokens, answers = run(model, args, patches, image_size, device, dtype, cached)
        mfu = training_flops(model, tokens, answers) / seconds / peak
        print(f"{label:<11} {tokens / seconds:>10.0f} {mfu:>7.1%}")
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
