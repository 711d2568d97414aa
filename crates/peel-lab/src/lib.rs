//! peel-lab
