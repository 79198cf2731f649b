"""``nyuv2``: NYUv2 (Silberman et al., ECCV 2012) in MTAN's preprocessed form, 13-class segmentation,
depth and surface normals.

Folder (``data_root`` or ``$MTLSEARCH_DATA_ROOT``): ``{train,val}/{image,label,depth,normal}/<i>.npy``
as distributed by MTAN (Liu et al., CVPR 2019): 795 training and 654 test images of 288x384
(``val`` is the official test split; see :mod:`mtlsearch.benchmarks.dense` for how our
train/val/test are formed and for the losses).  Any image size is accepted as long as it is the
same for every file; heads resize their output to it.

Tasks and metrics: ``segmentation`` (``miou``, ``pixacc``; higher is better), ``depth``
(``abs_err``, ``rel_err``; lower), ``normal`` (``mean``, ``median`` angle in degrees, lower;
``within_11_25``, ``within_22_5``, ``within_30``, higher).

Model (LibMTL's and GeMTL's NYUv2 setting): hard parameter sharing with a dilated ResNet-50 encoder
(output stride 8) and a DeepLab-v3 ASPP head per task (see :mod:`mtlsearch.benchmarks.models`).
Options: ``backbone`` (``resnet50``; ``resnet18``/``resnet34`` for small machines),
``pretrained`` (local torchvision state_dict for the backbone; the published setting uses ImageNet
weights, which we never download), ``val_fraction`` (0.1), ``num_workers`` (0),
``eval_batch_size`` (8).  Δm uses the published single-task references of the SegNet-MTAN setting
(``mtlsearch/references/nyuv2.json``; see its ``settings`` for what that implies).
The ASPP image-pooling branch has BatchNorm on a 1x1 map, so training needs ``batch_size >= 2``
(a last training batch of one example is dropped, see ``LoaderSplit``).  On a CPU the published
size is slow (about 30 s for an epoch of 2 training images with ResNet-50 here): test with small
images or ``backbone: resnet18``.
"""

from __future__ import annotations

from mtlsearch.balancing.base import HParam

from .base import HPSModel
from .dense import AUGMENT, EVAL_AVERAGE, IMAGE_SIZE, MTAN_WIDTH, VAL_FRACTION, DenseNpyBenchmark, mtan_filters
from .folder import NUM_WORKERS, PRETRAINED
from .models import RESNETS, ASPPHead, DilatedResNet, SegNetHead, SegNetMTAN


class NYUv2(DenseNpyBenchmark):
    name = "nyuv2"
    description = "NYUv2 (preprocessed .npy): 13-class segmentation, depth, surface normals"
    num_classes = 13
    modalities = {"segmentation": "label", "depth": "depth", "normal": "normal"}
    options = {
        "val_fraction": VAL_FRACTION,
        "model": HParam(
            str,
            "resnet_aspp",
            "the network: dilated ResNet + ASPP heads (LibMTL) or SegNet-MTAN (Nash-MTL)",
            lambda v: v in ("resnet_aspp", "segnet_mtan"),
            "'resnet_aspp' or 'segnet_mtan'",
        ),
        "mtan_width": MTAN_WIDTH,
        "augment": AUGMENT,
        "eval_average": EVAL_AVERAGE,
        "image_size": IMAGE_SIZE,
        "backbone": HParam(str, "resnet50", "dilated ResNet encoder", lambda v: v in RESNETS, ", ".join(RESNETS)),
        "pretrained": PRETRAINED,
        "num_workers": NUM_WORKERS,
        "eval_batch_size": HParam(int, 8, "batch size of evaluation passes", lambda v: v >= 1, "an integer >= 1"),
    }

    def build_model(self, task_names: list[str]) -> HPSModel:
        out = {"segmentation": self.num_classes, "depth": 1, "normal": 3}
        if self.opts["model"] == "segnet_mtan":
            mtan = SegNetMTAN(len(task_names), mtan_filters(self.opts["mtan_width"]))
            return HPSModel(mtan, {t: SegNetHead(mtan.out_channels, out[t], normalize=t == "normal") for t in task_names})
        encoder = DilatedResNet(self.opts["backbone"], self.opts["pretrained"], self.name)
        assert self.image_size is not None  # read from the folder when the benchmark was built
        out = {"segmentation": self.num_classes, "depth": 1, "normal": 3}
        heads = {t: ASPPHead(encoder.out_channels, out[t], self.image_size, normalize=t == "normal") for t in task_names}
        return HPSModel(encoder, heads)
