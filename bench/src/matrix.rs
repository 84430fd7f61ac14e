//! The sweep matrix: comma lists on every axis, cross product, shards.
