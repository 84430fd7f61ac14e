//! Exporters (CSV, JSON, markdown) behind one trait.
