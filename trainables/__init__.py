"""Ray Tune trainables: the only code that speaks Ray Tune inside a trial."""

from trainables.mtl import train_mtl

__all__ = ["train_mtl"]
