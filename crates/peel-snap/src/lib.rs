//! peel-snap
