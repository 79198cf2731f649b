"""Peer checks of the baselines added after the first peer table (see tests/peer_table.py)."""
from __future__ import annotations

from peer_table import Peer

ROWS: list[Peer] = []
