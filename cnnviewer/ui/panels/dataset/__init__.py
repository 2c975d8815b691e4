"""The Dataset panel (panel.DatasetPanel): its indexing, tabs, map view and picture widgets."""
