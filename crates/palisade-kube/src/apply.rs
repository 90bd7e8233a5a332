//! Server-side apply (filled in by a later commit).
