"""The assignment's two PyTorch networks, exactly as its report defines them.

Shared by the golden-value generators and the side-by-side benchmarks. VGG16 uses the report's
12-convolution cfg; ResidualBlock always applies make_equal_channel (the report's
`x.size() is not out.size()` is always true). See docs in the ctnn README.
"""

import math

import torch.nn as nn

CFG = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 'M', 512, 512, 512, 'M']


class VGG(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.features = features
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(True),
            nn.Dropout(), nn.Linear(512, 10))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2. / n))
                m.bias.data.zero_()

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), -1)
        return self.classifier(x)


def make_layers(cfg, batch_norm=False):
    layers, in_channels = [], 3
    for v in cfg:
        if v == 'M':
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            conv2d = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)
            if batch_norm:
                layers += [conv2d, nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            else:
                layers += [conv2d, nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


def vgg16():
    return VGG(make_layers(CFG))


def conv1x1(in_channels, out_channels, stride, padding):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, padding),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def conv3x3(in_channels, out_channels, stride, padding):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, padding),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    def __init__(self, in_channels, middle_channels, out_channels, downsample=False):
        super().__init__()
        self.downsample = downsample
        if downsample:
            self.layer = nn.Sequential(conv1x1(in_channels, middle_channels, 2, 0),
                                       conv3x3(middle_channels, middle_channels, 1, 1),
                                       conv1x1(middle_channels, out_channels, 1, 0))
            self.downsize = conv1x1(in_channels, out_channels, 2, 0)
        else:
            self.layer = nn.Sequential(conv1x1(in_channels, middle_channels, 1, 0),
                                       conv3x3(middle_channels, middle_channels, 1, 1),
                                       conv1x1(middle_channels, out_channels, 1, 0))
            self.make_equal_channel = conv1x1(in_channels, out_channels, 1, 0)

    def forward(self, x):
        if self.downsample:
            return self.layer(x) + self.downsize(x)
        out = self.layer(x)
        if x.size() is not out.size():  # always true: two distinct torch.Size objects
            x = self.make_equal_channel(x)
        return out + x


class ResNet50_layer4(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                    nn.MaxPool2d(3, 2, 0))
        self.layer2 = nn.Sequential(ResidualBlock(64, 64, 256, False), ResidualBlock(256, 64, 256, False),
                                    ResidualBlock(256, 64, 256, True))
        self.layer3 = nn.Sequential(ResidualBlock(256, 128, 512, False), ResidualBlock(512, 128, 512, False),
                                    ResidualBlock(512, 128, 512, False), ResidualBlock(512, 128, 512, True))
        self.layer4 = nn.Sequential(ResidualBlock(512, 256, 1024, False),
                                    *[ResidualBlock(1024, 256, 1024, False) for _ in range(5)])
        self.fc = nn.Linear(1024, num_classes)
        self.avgpool = nn.AvgPool2d(2, 1)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight.data)
            elif isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight.data)

    def forward(self, x):
        out = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        out = self.avgpool(out)
        out = out.view(out.size()[0], -1)
        return self.fc(out)


MODELS = {'vgg16': vgg16, 'resnet50': ResNet50_layer4}
