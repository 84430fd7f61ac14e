//! Statistics: median, percentiles, MAD, outliers.
