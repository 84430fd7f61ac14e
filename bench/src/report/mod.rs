//! Merging run CSVs across machines into a report with tables and SVG charts.
