//! Units of time the store computes with (a leaf: imports nothing).

/// One day in milliseconds (retention lanes are counted in days).
pub const DAY_MS: i64 = 86_400_000;
