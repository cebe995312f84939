"""Feature cache at LLaVA's shapes: does memory stay flat and reading stay fast as the image count grows?

    python benchmarks/scale.py [--sizes 1000 4000 16000] [--dtype bfloat16] [--batch-size 32] [--workdir DIR]

The encoder has CLIP-L/336's output shape (576 patch tokens x 1024 features, what LLaVA-1.5 caches) at a fraction of
its compute: a random one-layer CLIP with CLIP-L/336's patch embedding (336 px images, 14 px patches, 1024 channels),
whose features are read right after that embedding (its transformer block would cost ~10x the whole benchmark on a
CPU and changes nothing the cache sees). A real CLIP-L costs far more per image, so the read / encode ratio printed
here understates what a cache saves. The images are distinct synthetic 32 px PNGs (the processor scales them to 336,
as it would a photo). For each size, in a fresh process each (so peak RSS is its own):

* no cache: the images encoded on the fly, one pass, as training without a cache does every epoch;
* cache: `VisionFeatureCache.precompute` (encode once, write shards), then every image read back in shuffled order
  in batches (what training does each epoch) by a fresh reader, from the disk: the shards' pages are first dropped
  from the kernel's page cache, as they would be at LLaVA's scale, where the cache (660 GB for LLaVA-Pretrain in
  bf16) is many times the RAM; without that, small sizes would be read from memory and large ones not; then a
  second time, from the kernel's page cache as far as it holds the shards (the cost of the cache's own code);

printing images/s, peak RSS, disk per image against the features' own size (tokens x dim x dtype size), then
the ratios between the largest and smallest size. The last line reads `peak RSS <largest>/<smallest>: <ratio>`.
Each size's cache is deleted after its run (16k images at bf16 take ~19 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOKENS_SIDE, PATCH, DIM = 24, 14, 1024  # CLIP-L/336: 24 x 24 = 576 patches of 14 px, 1024 features


def prepare(work: Path, count: int) -> None:
    """The model (a tiny LM + the CLIP-L/336-shaped encoder) and `count` distinct images."""
    import numpy as np
    from PIL import Image
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    from llava_swap import build_vlm, tiny

    vision_dir = work / "encoder"
    config = CLIPVisionConfig(
        image_size=TOKENS_SIDE * PATCH,
        patch_size=PATCH,
        hidden_size=DIM,
        intermediate_size=DIM,
        num_hidden_layers=1,
        num_attention_heads=1,
    )
    CLIPVisionModel(config).save_pretrained(vision_dir)
    size = TOKENS_SIDE * PATCH
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
        vision_dir
    )
    model, processor = build_vlm(tiny.save_language_model("llama3", work / "lm"), vision_dir)
    model.save_pretrained(work / "model")
    processor.save_pretrained(work / "model")
    images = work / "images"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"{index:06d}.png")


def worker(work: Path, count: int, path: str, dtype: str, batch_size: int) -> dict:
    """One measurement in this process: `path` is "no-cache" or "cache"."""
    import torch

    from llava_swap import LlavaSwapForCausalLM, LlavaSwapProcessor
    from llava_swap.data.images import load_image
    from llava_swap.feature_cache import VisionFeatureCache

    torch.manual_seed(0)
    model = LlavaSwapForCausalLM.from_pretrained(work / "model").eval()
    tower = model.model.vision_tower
    embeddings = getattr(tower, "vision_model", tower).embeddings  # transformers < 5.24 nests it one level down
    model.get_vision_features = lambda pixels: embeddings(pixels)[:, 1:]  # the patch tokens, CLS dropped as LLaVA does
    processor = LlavaSwapProcessor.from_pretrained(work / "model")
    images = [str(work / "images" / f"{index:06d}.png") for index in range(count)]
    result = {"images": count}
    if path == "no-cache":
        start = time.perf_counter()
        with torch.no_grad():
            for begin in range(0, count, batch_size):
                batch = [load_image(image) for image in images[begin : begin + batch_size]]
                pixels = processor.image_processor(batch, return_tensors="pt")["pixel_values"]
                model.get_vision_features(pixels)
        result["encode_per_s"] = count / (time.perf_counter() - start)
    else:
        root = work / f"cache-{count}"
        cache = VisionFeatureCache(root, model, processor, dtype=getattr(torch, dtype))
        start = time.perf_counter()
        cache.precompute(model, images, batch_size=batch_size, progress=False)
        result["precompute_per_s"] = count / (time.perf_counter() - start)
        for shard in cache.folder.glob("shard-*"):  # read from the disk, as when the cache is many times the RAM
            descriptor = os.open(shard, os.O_RDONLY)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(descriptor)
        reader = VisionFeatureCache(root, model, processor, dtype=getattr(torch, dtype))  # a fresh index
        for name in ("read_per_s", "reread_per_s"):  # from the disk, then again (from the page cache, where it fits)
            order = random.Random(name).sample(images, count)
            for image in order:
                reader.key(image)  # hashing the image files is not reading the cache
            start = time.perf_counter()
            for begin in range(0, count, batch_size):
                features = reader.features(order[begin : begin + batch_size])
            result[name] = count / (time.perf_counter() - start)
        row_bytes = features[0].numel() * features[0].element_size()
        disk = sum(file.stat().st_size for file in cache.folder.iterdir() if file.is_file())
        result.update(row_bytes=row_bytes, disk_per_image=disk / count, shape=list(features.shape[1:]))
        reader.close()
        shutil.rmtree(root)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run(work: Path, count: int, path: str, args) -> dict:
    command = [sys.executable, __file__, "--worker", path, "--count", str(count), "--workdir", str(work)]
    command += ["--dtype", args.dtype, "--batch-size", str(args.batch_size)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{path} with {count} images failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _label(count: int) -> str:
    return f"{count // 1000}k" if count % 1000 == 0 else str(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", help="where images, model and caches go (default: a temporary folder)")
    parser.add_argument("--worker", choices=["no-cache", "cache"], help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(Path(args.workdir), args.count, args.worker, args.dtype, args.batch_size)))
        return
    sizes = sorted(args.sizes)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="llava-swap-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free
    need = sizes[-1] * TOKENS_SIDE**2 * DIM * (4 if args.dtype == "float32" else 2)
    if need > free:
        sys.exit(f"The largest size needs {need / 1e9:.1f} GB in {work}; {free / 1e9:.1f} GB free: pass --workdir.")
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}; cache dtype {args.dtype}")
    print(f"# preparing {sizes[-1]} images and the encoder in {work} ...", flush=True)
    prepare(work, sizes[-1])
    rows = []
    for count in sizes:
        plain, cached = run(work, count, "no-cache", args), run(work, count, "cache", args)
        rows.append((count, plain, cached))
        print(f"# {count} images done", flush=True)
    print()
    print(
        "| images | no cache: encode (img/s) | cache: precompute (img/s) | read from disk (img/s) | read again "
        "(img/s) | read / encode | peak RSS no cache / cache (MB) | disk per image (MB) | / features' size |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for count, plain, cached in rows:
        print(
            f"| {count} | {plain['encode_per_s']:.1f} | {cached['precompute_per_s']:.1f} | {cached['read_per_s']:.1f}"
            f" | {cached['reread_per_s']:.1f} | {cached['read_per_s'] / plain['encode_per_s']:.1f}x | "
            f"{plain['peak_rss_mb']:.0f} / "
            f"{cached['peak_rss_mb']:.0f} | {cached['disk_per_image'] / 1e6:.4f} | "
            f"{cached['disk_per_image'] / cached['row_bytes']:.4f} |"
        )
    (small, _, first), (large, _, last) = rows[0], rows[-1]
    print()
    print(f"features per image: {first['shape']} x {args.dtype} = {first['row_bytes']} bytes")
    ratio = f"{_label(large)}/{_label(small)}"
    print(
        f"read throughput {ratio}: {last['read_per_s'] / first['read_per_s']:.2f} from disk, "
        f"{last['reread_per_s'] / first['reread_per_s']:.2f} again"
    )
    print(f"peak RSS {ratio}: {last['peak_rss_mb'] / first['peak_rss_mb']:.2f}")
    if not args.workdir:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
