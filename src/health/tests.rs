//! Unit tests of the health driver's schedule.
