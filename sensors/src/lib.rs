//! Sensor sources.
