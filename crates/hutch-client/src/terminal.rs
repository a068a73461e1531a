//! The user's own terminal, for interactive clients such as `hutch shell`: raw mode (restored
//! when the guard drops) and the window size.
//!
//! The only module of this crate with `unsafe` code: `termios` and `ioctl` calls on a
//! descriptor the caller names.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

/// The terminal in raw mode until dropped, when its previous settings come back.
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl std::fmt::Debug for RawMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawMode").field("fd", &self.fd).finish()
    }
}

impl RawMode {
    /// Puts the terminal on `fd` in raw mode: no echo, no line editing, no signals from
    /// keys (Ctrl-C goes to the remote program), no output processing.
    pub fn enable(fd: RawFd) -> io::Result<RawMode> {
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is the caller's descriptor; saved is a valid termios to write into.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: raw is a valid termios derived from the terminal's own settings.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring the settings read from the same descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// The size of the terminal on `fd` as `(cols, rows)`, if it is one.
pub fn size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: winsize is plain data.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into the pointer.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } != 0 || size.ws_col == 0 {
        return None;
    }
    Some((size.ws_col, size.ws_row))
}
