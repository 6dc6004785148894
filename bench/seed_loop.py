"""The seed-style training loop that issue 11 measures `python -m core train` against: what a notebook does.

torchvision ``ImageFolder``, PIL decode and transforms every epoch, ResNet-18 from scratch (grey replicated to
three channels, as the product's ResNet-18 does), fp32, Adam, no validation. Imports nothing from ``core``.
Run by bench/training.py as its own process, so its start-up counts as `core train`'s does; prints one JSON
line with the time of the loop itself.

    python bench/seed_loop.py DIR [--epochs 2] [--image-size 224] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn
from torchvision import datasets, models, transforms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    transform = transforms.Compose([transforms.Grayscale(num_output_channels=3),
                                    transforms.Resize(args.image_size), transforms.ToTensor()])
    dataset = datasets.ImageFolder(args.dir, transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True)
    model = models.resnet18(num_classes=len(dataset.classes)).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    started, films = time.perf_counter(), 0
    for epoch in range(args.epochs):
        model.train()
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            loss = loss_fn(model(images), labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            films += len(labels)
            last_loss = loss.item()
    print(json.dumps({"films": len(dataset), "films_trained": films, "epochs": args.epochs,
                      "loop_seconds": round(time.perf_counter() - started, 3), "last_loss": last_loss}))


if __name__ == "__main__":
    main()
