#!/usr/bin/env python3
"""The assignment's main.py for one epoch on the CPU, reading CIFAR-10's binary version.

The reference run beside `ctnn-train`: same data directory, same hyper-parameters (Adam,
lr 0.001, batch 100, RandomCrop(32, 4) + RandomHorizontalFlip + Normalize), same thread count.

    /usr/bin/python3 benchmarks/assignment_main.py --model resnet50 --data data/cifar-10-batches-bin --threads 2

torchvision's CIFAR10 class reads the Python pickle version; this reads the binary records
(label byte + 3072 pixel bytes) into the same PIL images, so the transforms are torchvision's own.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision.transforms as transforms
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tests', 'pytorch'))
from assignment_models import MODELS  # noqa: E402


class CifarBinary(torch.utils.data.Dataset):
    def __init__(self, root, train, transform):
        names = ['data_batch_%d.bin' % i for i in range(1, 6)] if train else ['test_batch.bin']
        raw = np.concatenate([np.fromfile(os.path.join(root, n), dtype=np.uint8).reshape(-1, 3073) for n in names])
        self.labels = raw[:, 0].astype(np.int64)
        self.images = raw[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()  # HWC for PIL
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model', choices=sorted(MODELS), required=True)
    ap.add_argument('--data', default='data/cifar-10-batches-bin')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--epochs', type=int, default=1)
    ap.add_argument('--max-steps', type=int, default=-1)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    normalize = transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    train_tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), normalize])
    test_tf = transforms.Compose([transforms.ToTensor(), normalize])
    start = time.time()
    train_loader = torch.utils.data.DataLoader(CifarBinary(args.data, True, train_tf), batch_size=100, shuffle=True)
    test_loader = torch.utils.data.DataLoader(CifarBinary(args.data, False, test_tf), batch_size=100, shuffle=False)

    model = MODELS[args.model]()
    criterion = nn.CrossEntropyLoss()
    lr = 0.001
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    total_step = len(train_loader)
    steps = 0
    for epoch in range(args.epochs):
        model.train()
        running = 0.0
        for i, (images, labels) in enumerate(train_loader):
            loss = criterion(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            running += loss.item()
            steps += 1
            if (i + 1) % 100 == 0:
                print('Epoch [{}/{}], Step [{}/{}] Loss: {:.4f}'.format(epoch + 1, args.epochs, i + 1, total_step,
                                                                         running / (i + 1)), flush=True)
            if steps == args.max_steps:
                break
        if (epoch + 1) % 20 == 0:
            lr /= 3
            for g in optimizer.param_groups:
                g['lr'] = lr
    train_seconds = time.time() - start
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in test_loader:
            predicted = model(images).argmax(1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    print('Accuracy of the model on the test images: {} %'.format(100 * correct / total))
    print('wall time: train %.1f s, total %.1f s (%d threads)' % (train_seconds, time.time() - start, args.threads))


if __name__ == '__main__':
    main()
