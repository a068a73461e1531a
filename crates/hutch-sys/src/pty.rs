//! Pseudo-terminals: a new terminal from `/dev/ptmx`, its master side read and written
//! asynchronously.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::pty::{OpenptFlags, ioctl_tiocgptpeer, openpt, unlockpt};
use rustix::termios::{Winsize, tcsetwinsize};
use tokio::io::unix::AsyncFd;

/// The master side of a terminal, registered with the async reactor.
pub struct PtyMaster(AsyncFd<OwnedFd>);

impl PtyMaster {
    /// Opens a new terminal of `cols` × `rows` from the calling process's `/dev/ptmx`:
    /// `(master, the terminal itself)`. Neither end is inherited across `exec` unless
    /// duplicated onto a standard descriptor; neither becomes the caller's controlling terminal.
    pub fn open(cols: u16, rows: u16) -> io::Result<(PtyMaster, OwnedFd)> {
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let nonblocking = OpenptFlags::from_bits_retain(libc::O_NONBLOCK as u32);
        let master = openpt(flags | nonblocking)?;
        unlockpt(&master)?;
        let peer = ioctl_tiocgptpeer(&master, flags)?;
        resize(master.as_fd(), cols, rows)?;
        #[allow(unsafe_code)]
        // SAFETY: the descriptor is owned by the AsyncFd and stays open, on the same terminal,
        // until the AsyncFd (which deregisters it first) is dropped.
        let master =
            unsafe { AsyncFd::register(master) }.map_err(|e| io::Error::other(e.to_string()))?;
        Ok((PtyMaster(master), peer))
    }

    /// Reads what the terminal's programs wrote; `EIO` once none of them holds it any more.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.0.readable().await?;
            match guard.try_io(|fd| Ok(rustix::io::read(fd, &mut *buf)?)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` as if typed at the terminal.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.0.writable().await?;
            match guard.try_io(|fd| Ok(rustix::io::write(fd, data)?)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Resizes the terminal (the kernel sends its foreground process group `SIGWINCH`).
    pub fn resize(&self, cols: u16, rows: u16) -> io::Result<()> {
        resize(self.0.get_ref().as_fd(), cols, rows)
    }
}

fn resize(fd: std::os::fd::BorrowedFd<'_>, cols: u16, rows: u16) -> io::Result<()> {
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(tcsetwinsize(fd, size)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[tokio::test]
    async fn bytes_cross_a_new_terminal_both_ways_and_it_has_the_size_asked_for() {
        let (master, terminal) = PtyMaster::open(100, 30).expect("open pty");
        let size = rustix::termios::tcgetwinsize(&terminal).expect("get size");
        assert_eq!((size.ws_col, size.ws_row), (100, 30));
        master.resize(120, 40).expect("resize");
        let size = rustix::termios::tcgetwinsize(&terminal).expect("get size");
        assert_eq!((size.ws_col, size.ws_row), (120, 40));

        let mut terminal = std::fs::File::from(terminal);
        terminal
            .write_all(b"from program\n")
            .expect("write terminal");
        let mut buf = [0u8; 256];
        let n = master.read(&mut buf).await.expect("read master");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("from program"));

        master.write_all(b"typed\n").await.expect("write master");
        let mut got = [0u8; 64];
        let n = terminal.read(&mut got).expect("read terminal");
        assert_eq!(&got[..n], b"typed\n");
    }

    #[tokio::test]
    async fn the_master_reads_an_error_once_the_terminal_is_closed() {
        let (master, terminal) = PtyMaster::open(80, 24).expect("open pty");
        drop(terminal);
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), master.read(&mut buf))
            .await
            .expect("read does not hang");
        assert!(matches!(read, Err(_) | Ok(0)), "{read:?}");
    }
}
