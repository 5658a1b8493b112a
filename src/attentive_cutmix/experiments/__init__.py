"""Experiments: comparison grids (``compare``), their tables and plots, figures (``visualize``), localisation.

- ``grid.py``: a YAML grid -> cells with stable ids.
- ``compare.py``: the ``compare`` subcommand, running cells with the trainer.
- ``report.py``: tables (Markdown, CSV) and plots from the runs.
- ``localization.py``: how much of the pasted region lies on the partner's object.
- ``visualize.py``: the ``visualize`` subcommand (heat maps, chosen cells, mixed images).
"""
from .grid import Cell, Grid, GridError, load_grid
from .localization import localization_hit_rates, pasted_hit_rate

__all__ = ["Cell", "Grid", "GridError", "load_grid", "pasted_hit_rate", "localization_hit_rates"]
