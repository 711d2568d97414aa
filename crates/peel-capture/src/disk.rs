//! Free space on the filesystem that holds the capture files: a capture left running must never
//! become the next incident by filling the disk.

use std::path::Path;

/// Fraction (0.0..=1.0) of the filesystem holding `path` that unprivileged writers can still use.
pub(crate) fn free_fraction(path: &Path) -> nix::Result<f64> {
    let stat = nix::sys::statvfs::statvfs(path)?;
    let blocks = stat.blocks() as f64;
    if blocks == 0.0 {
        // Pseudo filesystems report no size; there is nothing to protect.
        return Ok(1.0);
    }
    Ok(stat.blocks_available() as f64 / blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_fraction_of_a_real_directory_is_a_fraction() {
        let dir = tempfile::tempdir().unwrap();
        let fraction = free_fraction(dir.path()).unwrap();
        assert!((0.0..=1.0).contains(&fraction), "{fraction}");
    }

    #[test]
    fn missing_directory_is_an_error() {
        assert_eq!(free_fraction(Path::new("/nonexistent/peel")), Err(nix::Error::ENOENT));
    }
}
