//! The byte stream under the client: the caller's stream, or TLS over it
//! after NBD_OPT_STARTTLS; reads buffered (headers are small, and large
//! payloads bypass the buffer), writes passed straight through.

use rustls::{ClientConnection, StreamOwned};
use std::io::{self, BufReader, Read, Write};

/// A stream the client can run over.
pub(crate) trait ReadWrite: Read + Write + Send {}
impl<T: Read + Write + Send> ReadWrite for T {}

type TlsStream = StreamOwned<ClientConnection, Box<dyn ReadWrite>>;

pub(crate) enum Transport {
    Plain(Box<dyn ReadWrite>),
    Tls(Box<TlsStream>),
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// Read buffer size: a batch of chunk headers and small payloads.
const READ_BUFFER: usize = 64 << 10;

pub(crate) struct Wire {
    r: BufReader<Transport>,
}

impl Wire {
    pub fn new(t: Transport) -> Wire {
        Wire {
            r: BufReader::with_capacity(READ_BUFFER, t),
        }
    }

    pub fn read_exact(&mut self, b: &mut [u8]) -> io::Result<()> {
        self.r.read_exact(b)
    }

    pub fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r.read_exact(&mut b)?;
        Ok(b)
    }

    pub fn u64(&mut self) -> io::Result<u64> {
        self.array().map(u64::from_be_bytes)
    }

    /// `n` bytes, in a buffer that grows as they arrive (a lying length
    /// costs no more memory than the peer really sends).
    pub fn bytes(&mut self, n: u32) -> io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity((n as usize).min(READ_BUFFER));
        (&mut self.r).take(n.into()).read_to_end(&mut v)?;
        if v.len() != n as usize {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(v)
    }

    /// Writes all of `parts`, then flushes.
    pub fn send(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let w = self.r.get_mut();
        for p in parts {
            w.write_all(p)?;
        }
        w.flush()
    }

    /// Bytes received but not read yet.
    pub fn buffered(&self) -> usize {
        self.r.buffer().len()
    }

    /// The stream under the buffer (which must be empty).
    pub fn into_transport(self) -> Transport {
        debug_assert!(self.r.buffer().is_empty());
        self.r.into_inner()
    }

    /// Ends TLS cleanly (close_notify), if it is on.
    pub fn close_tls(&mut self) -> io::Result<()> {
        if let Transport::Tls(s) = self.r.get_mut() {
            s.conn.send_close_notify();
            s.flush()?;
        }
        Ok(())
    }
}
