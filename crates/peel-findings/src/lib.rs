//! peel-findings
