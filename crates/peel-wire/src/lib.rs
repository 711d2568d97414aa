//! peel-wire
