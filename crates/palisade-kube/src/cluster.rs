//! Cluster set-up (filled in by a later commit).
