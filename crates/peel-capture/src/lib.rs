//! peel-capture
