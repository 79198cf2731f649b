"""``cityscapes``: Cityscapes (Cordts et al., CVPR 2016) in MTAN's preprocessed form, 7-class
segmentation and depth.

Folder (``data_root`` or ``$MTLSEARCH_DATA_ROOT``): ``{train,val}/{image,label_7,depth}/<i>.npy`` as
distributed by MTAN (Liu et al., CVPR 2019): 2,975 training and 500 test images of 128x256 (``val``
is the official validation split, used as the test split by the MTL literature; see
:mod:`mtlsearch.benchmarks.dense` for how our train/val/test are formed and for the losses).
Depth targets are Cityscapes' disparities (inverse depth), 0 = invalid.  Any image size is
accepted as long as it is the same for every file.

Tasks and metrics: ``segmentation`` (``miou``, ``pixacc``; higher is better), ``depth``
(``abs_err``, ``rel_err``; lower).

Model (MTAN / AdaTask Cityscapes setting): MTAN's hard-sharing SegNet, the whole encoder-decoder
shared, a two-convolution head per task (see :mod:`mtlsearch.benchmarks.models`).  Options:
``val_fraction`` (0.1), ``num_workers`` (0), ``eval_batch_size`` (8).  Δm uses the published
single-task references (``mtlsearch/references/cityscapes.json``).
"""

from __future__ import annotations

from mtlsearch.balancing.base import HParam

from .base import HPSModel
from .dense import AUGMENT, EVAL_AVERAGE, IMAGE_SIZE, MTAN_WIDTH, VAL_FRACTION, DenseNpyBenchmark, mtan_filters
from .folder import NUM_WORKERS
from .models import SegNet, SegNetHead, SegNetMTAN


class Cityscapes(DenseNpyBenchmark):
    name = "cityscapes"
    description = "Cityscapes (preprocessed .npy): 7-class segmentation, depth"
    num_classes = 7
    modalities = {"segmentation": "label_7", "depth": "depth"}
    options = {
        "val_fraction": VAL_FRACTION,
        "model": HParam(
            str,
            "segnet",
            "the network: MTAN's hard-sharing SegNet or SegNet-MTAN (Nash-MTL)",
            lambda v: v in ("segnet", "segnet_mtan"),
            "'segnet' or 'segnet_mtan'",
        ),
        "mtan_width": MTAN_WIDTH,
        "augment": AUGMENT,
        "eval_average": EVAL_AVERAGE,
        "image_size": IMAGE_SIZE,
        "num_workers": NUM_WORKERS,
        "eval_batch_size": HParam(int, 8, "batch size of evaluation passes", lambda v: v >= 1, "an integer >= 1"),
    }

    def build_model(self, task_names: list[str]) -> HPSModel:
        if self.opts["model"] == "segnet_mtan":
            mtan = SegNetMTAN(len(task_names), mtan_filters(self.opts["mtan_width"]))
            out = {"segmentation": self.num_classes, "depth": 1}
            return HPSModel(mtan, {t: SegNetHead(mtan.out_channels, out[t]) for t in task_names})
        encoder = SegNet()
        out = {"segmentation": self.num_classes, "depth": 1}
        return HPSModel(encoder, {t: SegNetHead(encoder.out_channels, out[t]) for t in task_names})
