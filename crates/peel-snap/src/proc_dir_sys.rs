//! The unsafe code for walking `/proc/<pid>/fd` cheaply: `getdents64` into a reused buffer (std's
//! `read_dir` allocates for every entry) and `readlinkat` relative to the open directory (std's
//! `read_link` takes a full path, which the kernel walks component by component for each of the
//! 100,000 descriptors of a busy host). Parsing the directory records is safe code.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `struct linux_dirent64`: d_ino (8), d_off (8), d_reclen (2), d_type (1), then the name.
const DIRENT_NAME_OFFSET: usize = 19;

/// An open directory.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
}

impl Dir {
    pub(crate) fn open(path: &Path) -> io::Result<Self> {
        let file: File = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(path)?;
        Ok(Dir { fd: file.into() })
    }

    /// Calls `each` with the name of every entry but `.` and `..`, reading through `buffer`.
    pub(crate) fn for_each_name(
        &self,
        buffer: &mut Vec<u8>,
        mut each: impl FnMut(&[u8]),
    ) -> io::Result<()> {
        if buffer.len() < 32 * 1024 {
            buffer.resize(32 * 1024, 0);
        }
        loop {
            // SAFETY: `buffer` is a live, writable slice of `buffer.len()` bytes; getdents64 writes
            // at most that many and returns how many it wrote, or -1.
            let read = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr(),
                    buffer.len(),
                )
            };
            let read = match usize::try_from(read) {
                Ok(0) => return Ok(()),
                Ok(read) => read.min(buffer.len()),
                Err(_) => {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(err);
                }
            };
            let mut records = &buffer[..read];
            while records.len() > DIRENT_NAME_OFFSET {
                let length = usize::from(u16::from_ne_bytes([records[16], records[17]]));
                if length <= DIRENT_NAME_OFFSET || length > records.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "getdents64 record length out of bounds",
                    ));
                }
                let name = &records[DIRENT_NAME_OFFSET..length];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                if name != b"." && name != b".." {
                    each(name);
                }
                records = &records[length..];
            }
        }
    }

    /// The target of the symbolic link `name` in this directory, in `buffer` (truncated to its size).
    pub(crate) fn read_link<'b>(&self, name: &CStr, buffer: &'b mut [u8]) -> io::Result<&'b [u8]> {
        // SAFETY: `name` is a NUL-terminated string that lives across the call; `buffer` is a live,
        // writable slice of `buffer.len()` bytes, and readlinkat writes at most that many.
        let length = unsafe {
            libc::readlinkat(
                self.fd.as_raw_fd(),
                name.as_ptr(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        };
        match usize::try_from(length) {
            Ok(length) => Ok(&buffer[..length.min(buffer.len())]),
            Err(_) => Err(io::Error::last_os_error()),
        }
    }
}

/// A descriptor number as a NUL-terminated name (`57\0`), written into `buffer`.
pub(crate) fn fd_name(fd: u32, buffer: &mut [u8; 12]) -> &CStr {
    let mut digits = [0u8; 10];
    let mut rest = fd;
    let mut count = 0;
    loop {
        digits[count] = b'0' + (rest % 10) as u8;
        count += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for (index, digit) in digits[..count].iter().rev().enumerate() {
        buffer[index] = *digit;
    }
    buffer[count] = 0;
    CStr::from_bytes_until_nul(&buffer[..=count]).unwrap_or(c"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_names() {
        let mut buffer = [0u8; 12];
        assert_eq!(fd_name(0, &mut buffer).to_bytes(), b"0");
        assert_eq!(fd_name(57, &mut buffer).to_bytes(), b"57");
        assert_eq!(fd_name(u32::MAX, &mut buffer).to_bytes(), b"4294967295");
    }

    #[test]
    fn lists_a_directory_and_reads_links() {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::os::unix::fs::symlink("socket:[77]", dir.path().join("3")).expect("symlink");
        std::fs::write(dir.path().join("file"), b"x").expect("file");
        let opened = Dir::open(dir.path()).expect("open");
        let mut names = Vec::new();
        opened.for_each_name(&mut Vec::new(), |name| names.push(name.to_vec())).expect("list");
        names.sort();
        assert_eq!(names, [b"3".to_vec(), b"file".to_vec()]);
        let mut target = [0u8; 64];
        assert_eq!(opened.read_link(c"3", &mut target).expect("link"), b"socket:[77]");
        assert!(opened.read_link(c"file", &mut target).is_err());
    }
}
