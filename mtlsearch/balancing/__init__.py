"""Balancing methods: one small module per method, registered here by name."""

from __future__ import annotations

from mtlsearch.errors import ConfigError, choices

from .aligned_mtl import AlignedMTL
from .base import Balancing, Check, GradBalancing, GradResult, HParam, LossBalancing, OneOf, Range
from .cagrad import CAGrad
from .db_mtl import DBMTL
from .dwa import DWA
from .excess_mtl import ExcessMTL
from .ew import EW
from .fairgrad import FairGrad
from .famo import FAMO
from .go4align import GO4Align
from .gemtl import GeMTL, NonPositiveLossError, power_mean
from .gls import GLS
from .gradnorm import GradNorm
from .gradvac import GradVac
from .graddrop import GradDrop
from .imtl import IMTLG, IMTLH, IMTLL
from .ldc_mtl import LDCMTL
from .mgda import MGDA
from .moco import MoCo
from .nash_mtl import NashMTL
from .pcgrad import PCGrad
from .rlw import RLW
from .sdmgrad import SDMGrad
from .si import SI
from .static import Static
from .stch import STCH
from .upgrad import UPGrad
from .uw import UW
from .uw_so import UWSO

METHODS: dict[str, type[Balancing]] = {
    cls.name: cls
    for cls in (
        EW,
        GeMTL,
        IMTLL,
        IMTLG,
        IMTLH,
        MGDA,
        PCGrad,
        GradDrop,
        GradVac,
        CAGrad,
        NashMTL,
        AlignedMTL,
        UPGrad,
        FairGrad,
        UW,
        DWA,
        GLS,
        RLW,
        GradNorm,
        FAMO,
        DBMTL,
        STCH,
        Static,
        SI,
        UWSO,
        GO4Align,
        LDCMTL,
        MoCo,
        SDMGrad,
        ExcessMTL,
    )
}


def get_method(name: str) -> type[Balancing]:
    """A built-in method by name, or a user's: ``module:Class`` / ``path/file.py:Class``."""
    if isinstance(name, str) and ":" in name:
        from mtlsearch.plugins import load_class

        return load_class(name, Balancing, "method")
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(
            f"unknown method {name!r}; choose one of {choices(METHODS)} or your own as 'module:Class' or 'path/file.py:Class'",
            field="method",
        ) from None


__all__ = [
    "Balancing",
    "Check",
    "GradBalancing",
    "GradResult",
    "HParam",
    "LossBalancing",
    "OneOf",
    "Range",
    "METHODS",
    "get_method",
    "NonPositiveLossError",
    "power_mean",
    "DBMTL",
    "DWA",
    "FAMO",
    "GLS",
    "GradNorm",
    "RLW",
    "STCH",
    "UW",
    "ExcessMTL",
    "GO4Align",
    "LDCMTL",
    "MoCo",
    "SDMGrad",
    "SI",
    "Static",
    "UWSO",
]
