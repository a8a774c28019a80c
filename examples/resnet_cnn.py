"""A small ResNet-style CNN with BatchNorm and residual blocks: what a healthy scan looks like.

Input 3x32x32 (inferred from the first Conv2d). BatchNorm keeps the forward signal at unit scale and the
identity shortcuts give the gradient a path that skips every conv, so no layer attenuates it. Scan it:

    gradscope scan examples/resnet_cnn.py
    gradscope scan examples/resnet_cnn.py --format json --output report.json
    gradscope trial examples/resnet_cnn.py     # dataset() below: digits as small RGB images
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn, plus the input (projected when the shape changes), then relu."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        y: Tensor = self.relu(out)
        return y


class ResNetCNN(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.stages = nn.Sequential(
            BasicBlock(width, width),
            BasicBlock(width, 2 * width, stride=2),
            BasicBlock(2 * width, 2 * width),
            BasicBlock(2 * width, 4 * width, stride=2),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))
        y: Tensor = self.fc(torch.flatten(self.pool(x), 1))
        return y


def build_model(num_classes: int = 10, width: int = 16) -> nn.Module:
    return ResNetCNN(num_classes=num_classes, width=width)


def dataset() -> tuple[Tensor, Tensor]:
    """For ``gradscope trial``: scikit-learn's bundled digits as 3×8×8 images (the gray value in every channel; the
    network pools globally, so any image size works), int64 labels. Small enough to train in seconds on a CPU."""
    from sklearn.datasets import load_digits  # only a trial needs it; scanning works without sklearn

    x, y = load_digits(return_X_y=True)
    images = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8).expand(-1, 3, -1, -1).contiguous()
    return images, torch.tensor(y, dtype=torch.int64)
