"""Experiments: comparison grids (``compare``), their tables and plots, figures (``visualize``), localisation.

- ``grid.py``: a YAML grid -> cells with stable ids.
- ``compare.py``: the ``compare`` subcommand, running cells with the trainer.
- ``report.py``: tables (Markdown, CSV), paired comparisons (as the registry's methods declare them) and plots.
- ``stats.py``: paired differences over seeds with their t-intervals.
- ``demo.py``: the ``demo`` subcommand, a fixed grid run by ``compare``'s runner and summarised by the report.
- ``localization.py``: how much of the pasted region lies on the partner's object.
- ``visualize.py``: the ``visualize`` subcommand (heat maps, chosen cells, mixed images).
"""
from .grid import Cell, Grid, GridError, load_grid
from .localization import pasted_hit_rate, region_hit_rates

__all__ = ["Cell", "Grid", "GridError", "load_grid", "pasted_hit_rate", "region_hit_rates"]
