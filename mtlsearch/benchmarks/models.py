"""Networks of the real benchmarks (encoders = shared parameters, heads = task-specific ones).

* :class:`DilatedResNet` + :class:`ASPPHead`: NYUv2 in LibMTL / GeMTL: a ResNet-50 whose last two
  stages use dilation instead of stride (output stride 8, He et al. 2016; Yu et al. 2017), and per
  task a DeepLab-v3 head (ASPP with rates 12, 24, 36, Chen et al. 2017) whose output is resized
  bilinearly (``align_corners=True``) to the input size.
* :class:`SegNet` + :class:`SegNetHead`: the "split" (hard-sharing) SegNet of MTAN (Liu et al.,
  CVPR 2019, ``im2im_pred/model_segnet_split.py``, type "standard"): the whole encoder-decoder is
  shared, each head is a 3x3 and a 1x1 convolution at full resolution.
* :class:`ClassifierEncoder`: ResNet-18 with global average pooling and LibMTL's Office hidden layer
  (Linear 512-512, BatchNorm, ReLU, Dropout 0.5); heads are linear.
* :class:`SmallCNN`: four conv-BN-ReLU-maxpool blocks and global average pooling (CelebA).

Backbones start from random weights; ``pretrained`` loads a local torchvision-format state_dict
(e.g. ``resnet50-0676ba61.pth``) into the ResNet before it is dilated (weights do not depend on
stride or dilation).  Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtlsearch.errors import ConfigError

RESNETS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048}


def load_backbone_weights(model: nn.Module, path: str | None, benchmark: str) -> None:
    """Load a torchvision-format state_dict (the classifier ``fc.*`` is ignored)."""
    if not path:
        return
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"{benchmark}: pretrained weights file {file} not found (nothing is downloaded)", field="pretrained")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file is the user's input error
        raise ConfigError(f"{benchmark}: cannot read {file} as a torch state_dict: {err}", field="pretrained") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = {k for k in model.state_dict() if not k.startswith("fc.")}
    missing, unexpected = sorted(own - set(state)), sorted(set(state) - own)
    if missing or unexpected:
        what = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"
        raise ConfigError(
            f"{benchmark}: {file} is not a torchvision {type(model).__name__} state_dict ({what}; "
            f"{len(missing)} missing, {len(unexpected)} unexpected)",
            field="pretrained",
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ConfigError(
            f"{benchmark}: {file} does not fit the backbone: {str(err).splitlines()[-1].strip()}", field="pretrained"
        ) from None


def _dilate_basic_blocks(layer: nn.Sequential, dilation: int) -> None:
    # torchvision's BasicBlock refuses replace_stride_with_dilation; do what it does for Bottleneck:
    # the stage's strided convs get stride 1, its first 3x3 conv dilation/2, the others dilation.
    blocks: list[Any] = list(layer)  # torchvision's BasicBlocks (untyped)
    for i, block in enumerate(blocks):
        for conv in (block.conv1, block.conv2):
            first = i == 0 and conv is block.conv1
            d = max(dilation // 2, 1) if first else dilation
            conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


class DilatedResNet(nn.Module):
    """ResNet trunk without pooling/classifier, output stride 8: ``[N, 3, H, W] -> [N, C, H/8, W/8]``."""

    def __init__(self, arch: str = "resnet50", pretrained: str | None = None, benchmark: str = ""):
        import torchvision  # lazily: importing it costs seconds

        super().__init__()
        if arch == "resnet50":
            net = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
            load_backbone_weights(net, pretrained, benchmark)
        else:
            net = getattr(torchvision.models, arch)(weights=None)
            load_backbone_weights(net, pretrained, benchmark)
            _dilate_basic_blocks(net.layer3, 2)
            _dilate_basic_blocks(net.layer4, 4)
        self.out_channels = RESNETS[arch]
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: Tensor) -> Tensor:
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    pad = dilation if kernel == 3 else 0
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class _ASPPPooling(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), _conv_bn_relu(cin, cout, kernel=1))

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPPHead(nn.Module):
    """DeepLab-v3 head: ASPP (1x1, three dilated 3x3, image pooling; 256 channels each), 1x1
    projection with dropout 0.5, 3x3 conv-BN-ReLU, 1x1 classifier, bilinear resize to ``out_size``.
    ``normalize``: L2-normalise the output channels (surface normals)."""

    def __init__(
        self,
        cin: int,
        cout: int,
        out_size: tuple[int, int],
        rates: tuple[int, ...] = (12, 24, 36),
        width: int = 256,
        normalize: bool = False,
    ):
        super().__init__()
        self.branches = nn.ModuleList(
            [_conv_bn_relu(cin, width, kernel=1)] + [_conv_bn_relu(cin, width, dilation=r) for r in rates] + [_ASPPPooling(cin, width)]
        )
        self.project = nn.Sequential(_conv_bn_relu(width * (len(rates) + 2), width, kernel=1), nn.Dropout(0.5))
        self.refine = _conv_bn_relu(width, width)
        self.classifier = nn.Conv2d(width, cout, 1)
        self.out_size = tuple(out_size)
        self.normalize = normalize

    def forward(self, z: Tensor) -> Tensor:
        y = self.project(torch.cat([b(z) for b in self.branches], dim=1))
        y = self.classifier(self.refine(y))
        y = F.interpolate(y, size=self.out_size, mode="bilinear", align_corners=True)
        return F.normalize(y, dim=1) if self.normalize else y


class SegNet(nn.Module):
    """MTAN's SegNet (VGG-16-like, filters 64-128-256-512-512, max-pool indices reused by the
    decoder's max-unpool): ``[N, 3, H, W] -> [N, 64, H, W]``.  Any H, W (unpooling restores each
    stage's size, so sizes need not be multiples of 32).  Xavier-normal init as in MTAN."""

    def __init__(self, filters: tuple[int, ...] = (64, 128, 256, 512, 512)):
        super().__init__()
        f = list(filters)

        def conv(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        # Stage i: one conv changing the width, then 1 (stages 0-1) or 2 (stages 2-4) convs keeping it.
        self.enc = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(5):
            cin = 3 if i == 0 else f[i - 1]
            extra = 1 if i < 2 else 2
            self.enc.append(nn.Sequential(conv(cin, f[i]), *[conv(f[i], f[i]) for _ in range(extra)]))
            # Decoder stage i (applied in reverse order) maps f[i] -> f[i-1] (f[0] for stage 0).
            cout = f[0] if i == 0 else f[i - 1]
            self.dec.append(nn.Sequential(conv(f[i], cout), *[conv(cout, cout) for _ in range(extra)]))
        self.out_channels = f[0]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:  # every conv here has one (bias=True)
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        indices, sizes = [], []
        for stage in self.enc:
            x = stage(x)
            sizes.append(x.shape[-2:])
            x, idx = F.max_pool2d(x, 2, 2, return_indices=True)
            indices.append(idx)
        for i in reversed(range(5)):
            x = F.max_unpool2d(x, indices[i], (2, 2), (2, 2), output_size=sizes[i])
            x = self.dec[i](x)
        return x


class SegNetHead(nn.Sequential):
    """MTAN's task head: 3x3 conv (64->64) then 1x1 conv to the task's channels."""

    def __init__(self, cin: int, cout: int, normalize: bool = False):
        super().__init__(nn.Conv2d(cin, cin, 3, padding=1), nn.Conv2d(cin, cout, 1))
        self.normalize = normalize
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:  # every conv here has one (bias=True)
                    nn.init.zeros_(m.bias)

    def forward(self, z: Tensor) -> Tensor:
        y = super().forward(z)
        return F.normalize(y, dim=1) if self.normalize else y


class ClassifierEncoder(nn.Module):
    """ResNet trunk + global average pooling + LibMTL's Office hidden layer: ``[N, 3, H, W] -> [N, 512]``."""

    def __init__(self, arch: str = "resnet18", pretrained: str | None = None, benchmark: str = "", hidden: int = 512):
        import torchvision

        super().__init__()
        net = getattr(torchvision.models, arch)(weights=None)
        load_backbone_weights(net, pretrained, benchmark)
        net.fc = nn.Identity()  # torchvision's forward: trunk, avgpool, flatten, fc
        self.backbone = net
        linear = nn.Linear(RESNETS[arch], hidden)
        nn.init.normal_(linear.weight, 0.0, 0.005)
        nn.init.constant_(linear.bias, 0.1)
        self.hidden = nn.Sequential(linear, nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(0.5))
        self.out_channels = hidden

    def forward(self, x: Tensor) -> Tensor:
        return self.hidden(self.backbone(x))


class SmallCNN(nn.Module):
    """Four blocks of conv3x3-BN-ReLU-maxpool2 (widths ``widths``), then global average pooling."""

    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512)):
        super().__init__()
        layers, cin = [], 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_channels = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class SegNetMTAN(nn.Module):
    """MTAN's SegNet with task attention (Liu et al., CVPR 2019; the ``SegNetMtan`` of Nash-MTL's and
    FAMO's ``experiments/{nyuv2,cityscapes}/models.py``), the model of the Nash-MTL protocol.

    ``[N, 3, H, W] -> [z_1, ..., z_T]``, one ``[N, 64, H, W]`` representation per task (H and W
    multiples of 32: the attention decoder doubles sizes by interpolation).  The global SegNet
    (encoder/decoder blocks, max-pool indices reused by max-unpool) and the attention blocks' own
    convolutions (``enc_att_conv``, ``dec_att_conv``) are shared by every task; each task has its own
    attention masks (``enc_att[t]``, ``dec_att[t]``: 1x1 conv-BN-ReLU, 1x1 conv-BN-sigmoid).  As in
    the released code every parameter outside the prediction heads counts as shared (the released
    ``shared_parameters()`` keeps all names without ``pred``), so a task's gradient is zero on
    another task's masks.  Heads: :class:`SegNetHead` (3x3 then 1x1 convolution).  Xavier-normal
    init of convolutions, zero biases, BN weight 1, as released.
    """

    def __init__(self, num_tasks: int, filters: tuple[int, ...] = (64, 128, 256, 512, 512)):
        super().__init__()
        f = list(filters)

        def conv(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        def att(cin: int, mid: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, mid, 1),
                nn.BatchNorm2d(mid),
                nn.ReLU(inplace=True),
                nn.Conv2d(mid, cout, 1),
                nn.BatchNorm2d(cout),
                nn.Sigmoid(),
            )

        # Global network, stage i: a conv changing the width, then 1 (stages 0-1) or 2 (stages 2-4) keeping it.
        self.enc_in = nn.ModuleList([conv(3 if i == 0 else f[i - 1], f[i]) for i in range(5)])
        self.enc_more = nn.ModuleList([nn.Sequential(*[conv(f[i], f[i]) for _ in range(1 if i < 2 else 2)]) for i in range(5)])
        # Decoder stage i (run from 4 down to 0) maps f[i] -> f[i-1] (f[0] at stage 0).
        self.dec_in = nn.ModuleList([conv(f[i], f[max(i - 1, 0)]) for i in range(5)])
        self.dec_more = nn.ModuleList(
            [nn.Sequential(*[conv(f[max(i - 1, 0)], f[max(i - 1, 0)]) for _ in range(1 if i < 2 else 2)]) for i in range(5)]
        )
        # Shared convolutions of the attention path: encoder f[i] -> f[i+1] (512 -> 512 last),
        # decoder f[i] -> f[i-1] (64 -> 64 first, 512 -> 512 last).
        self.enc_att_conv = nn.ModuleList([conv(f[i], f[min(i + 1, 4)]) for i in range(5)])
        self.dec_att_conv = nn.ModuleList([conv(f[i], f[i] if i in (0, 4) else f[i - 1]) for i in range(5)])
        # Task-specific attention masks.
        self.enc_att = nn.ModuleList(
            [nn.ModuleList([att(f[0], f[0], f[0])] + [att(2 * f[i], f[i], f[i]) for i in range(1, 5)]) for _ in range(num_tasks)]
        )
        self.dec_att = nn.ModuleList(
            [
                nn.ModuleList([att(2 * f[0], f[0], f[0])] + [att(f[i] + f[i - 1], f[i - 1], f[i - 1]) for i in range(1, 5)])
                for _ in range(num_tasks)
            ]
        )
        self.out_channels = f[0]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight)
                if m.bias is not None:  # every conv here has one (bias=True)
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> list[Tensor]:
        first, second, indices = [], [], []
        for i in range(5):
            a = self.enc_in[i](x)
            b = self.enc_more[i](a)
            first.append(a)
            second.append(b)
            x, idx = F.max_pool2d(b, 2, 2, return_indices=True)
            indices.append(idx)
        ups, dec_out = [], []
        for j in range(5):
            stage = 4 - j
            up = F.max_unpool2d(x, indices[stage], (2, 2), (2, 2), output_size=second[stage].shape[-2:])
            x = self.dec_more[stage](self.dec_in[stage](up))
            ups.append(up)
            dec_out.append(x)
        reps = []
        enc_atts: list[Any] = list(self.enc_att)  # per task: a ModuleList of five attention blocks
        dec_atts: list[Any] = list(self.dec_att)
        for enc_att, dec_att in zip(enc_atts, dec_atts):
            a = None
            for i in range(5):
                mask = enc_att[i](first[i] if a is None else torch.cat((first[i], a), dim=1))  # a is None at i == 0 only
                a = F.max_pool2d(self.enc_att_conv[i](mask * second[i]), 2, 2)
            for j in range(5):
                stage = 4 - j
                a = F.interpolate(a, scale_factor=2, mode="bilinear", align_corners=True)
                a = self.dec_att_conv[stage](a)
                mask = dec_att[stage](torch.cat((ups[j], a), dim=1))
                a = mask * dec_out[j]
            reps.append(a)
        return reps


class CelebACNN(nn.Module):
    """The 9-layer CNN of the CelebA experiments of FAMO (Cranial-XIX/FAMO ``experiments/celeba``,
    the Nash-MTL protocol's CelebA model): seven bias-free 3x3 conv-BN-ReLU layers (64, 128, 128,
    256, 256, 512, 512 channels; max-pooling after the 1st, 3rd and 5th), global average pooling, then
    two bias-free Linear(512, 512)-BN-ReLU layers: ``[N, 3, H, W] -> [N, 512]``.  Heads: one
    Linear(512, 1) logit per attribute (the released sigmoid + BCE equals BCE on logits)."""

    def __init__(self) -> None:
        super().__init__()
        layers, cin = [], 3
        for i, w in enumerate((64, 128, 128, 256, 256, 512, 512)):
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i in (0, 2, 4):
                layers.append(nn.MaxPool2d(2))
            cin = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        for _ in range(2):
            layers += [nn.Linear(512, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.out_channels = 512

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)
