//! peel-load
