//! The only unsafe code in peel-snap: three libc calls that open, send on and receive from a
//! `NETLINK_SOCK_DIAG` socket, which std cannot do. Message layout and parsing are safe code in
//! `sock_diag`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A netlink socket talking to the kernel's sock_diag subsystem.
#[derive(Debug)]
pub(crate) struct DiagSocket {
    fd: OwnedFd,
}

impl DiagSocket {
    pub(crate) fn open() -> io::Result<Self> {
        // SAFETY: socket(2) takes only integer arguments and returns a new descriptor or -1.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_SOCK_DIAG,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2), is valid, and nothing else owns it.
        Ok(DiagSocket { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Sends one request datagram to the kernel (netlink port 0).
    pub(crate) fn send(&self, message: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_nl is plain old data for which all-zero bytes are a valid value.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `message` is a live slice of `message.len()` bytes and `kernel` a live sockaddr_nl
        // whose exact size is passed; the kernel only reads both during the call.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
                std::ptr::from_ref(&kernel).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        match usize::try_from(sent) {
            Ok(n) if n == message.len() => Ok(()),
            Ok(_) => Err(io::Error::new(io::ErrorKind::WriteZero, "short netlink send")),
            Err(_) => Err(io::Error::last_os_error()),
        }
    }

    /// Receives one datagram (possibly several netlink messages) into `buffer`.
    pub(crate) fn recv(&self, buffer: &mut [u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `buffer` is a live, writable slice of `buffer.len()` bytes; the kernel writes at
            // most that many.
            let received = unsafe {
                libc::recv(self.fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0)
            };
            match usize::try_from(received) {
                Ok(n) => return Ok(n),
                Err(_) => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
            }
        }
    }
}
