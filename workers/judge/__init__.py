"""The judge: outcomes per version, the statistics of each policy, and its decisions.

`core.py` is the judge with no I/O, `app.py` the faust-streaming app around it; both are
loaded only when `riverrun judge` runs (faust and SciPy are heavy).
"""

from __future__ import annotations

__all__: list[str] = []
