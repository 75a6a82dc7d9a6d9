"""Train a small ResNeXt built from GroupedConv2d on scikit-learn's handwritten digits.

The dataset (1797 8x8 grey images, 10 classes) ships inside scikit-learn: nothing is
downloaded. On a CPU a few epochs take about a minute and reach over 90% test accuracy.

    python examples/train.py                               # one process, CPU or GPU
    python examples/train.py --epochs 3 --backend triton   # any backend of grouped_conv2d
    torchrun --nproc_per_node 2 examples/train.py          # data parallel (gloo on CPU, NCCL on GPU)

On a GPU it trains in channels_last with bf16 autocast (AMP). It prints the test accuracy and,
with --metrics FILE, writes the per-step losses and the accuracy as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from resnext_kernels.models import ResNeXt  # noqa: E402


def load_digits(test_fraction: float = 0.2, seed: int = 0):
    """(train, test) TensorDatasets of 1x8x8 float images scaled to [0, 1] and int labels."""
    from sklearn.datasets import load_digits as sk_digits

    data = sk_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[test], y[test])


def small_resnext(backend: str = "auto", cardinality: int = 8, width: int = 16) -> ResNeXt:
    """Two stages of one bottleneck each, a 3x3 stem for 8x8 inputs; grouped 3x3 widths 32 and
    64 (8 groups of 4 and of 8 channels)."""
    return ResNeXt(layers=(1, 1), cardinality=cardinality, bottleneck_width=width, num_classes=10,
                   in_channels=1, stem_width=16, small_input=True, backend=backend)


def progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, leave=False)
    except ImportError:
        return iterable


def evaluate(model, loader, device, memory_format) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            x = x.to(device).contiguous(memory_format=memory_format)
            correct += (model(x).argmax(1).cpu() == y).sum().item()
            total += len(y)
    model.train()
    return correct / max(total, 1)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--backend", default="auto", choices=["auto", "cuda", "triton", "aten"])
    ap.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--metrics", default=None, help="write losses and accuracy as JSON here")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    use_cuda = torch.cuda.is_available()
    if distributed:
        dist.init_process_group("nccl" if use_cuda else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    else:
        rank, world = 0, 1
    device = torch.device("cuda") if use_cuda else torch.device("cpu")
    memory_format = torch.channels_last if use_cuda else torch.contiguous_format
    torch.manual_seed(args.seed)

    train_set, test_set = load_digits(seed=args.seed)
    sampler = DistributedSampler(train_set, world, rank, seed=args.seed) if distributed else None
    train_loader = DataLoader(train_set, args.batch_size, shuffle=sampler is None, sampler=sampler,
                              generator=torch.Generator().manual_seed(args.seed))
    test_loader = DataLoader(test_set, 256)

    model = small_resnext(args.backend).to(device).to(memory_format=memory_format)
    if distributed:
        model = DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    steps_total = args.epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps_total)

    losses = []
    step = 0
    t0 = time.time()
    for epoch in range(args.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        for x, y in progress(train_loader, rank == 0 and not args.no_progress, f"epoch {epoch + 1}"):
            x = x.to(device).contiguous(memory_format=memory_format)
            y = y.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_cuda):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            step += 1
            if args.max_steps is not None and step >= args.max_steps:
                break
        if args.max_steps is not None and step >= args.max_steps:
            break
        if rank == 0:
            print(f"epoch {epoch + 1}: loss {sum(losses[-len(train_loader):]) / len(train_loader):.4f}")

    accuracy = evaluate(model, test_loader, device, memory_format)
    if rank == 0:
        print(f"test accuracy {accuracy:.4f} after {step} steps, {time.time() - t0:.1f} s "
              f"({world} process{'es' if world > 1 else ''}, {device.type}, backend {args.backend})")
        if args.metrics:
            with open(args.metrics, "w") as f:
                json.dump(dict(losses=losses, accuracy=accuracy, world_size=world, steps=step), f)
    if distributed:
        dist.destroy_process_group()
    return accuracy


if __name__ == "__main__":
    main()
