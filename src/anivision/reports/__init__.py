"""Report artefacts. ``anivision.reports.plots`` draws the PNG figures; it is not imported here so
that importing :mod:`anivision.reports` does not load matplotlib."""
