//! What can go wrong talking to a server. Every error names the export and
//! what the client was doing ([`Step`]: the greeting, an option, a request
//! with its offset and length); [`Error::kind`] gives a stable name and
//! [`Error::errno`] the server's error value of a failed request.

use crate::device::BlockSize;
use crate::proto::*;
use crate::reply::ReplyError;
use std::fmt;
use std::io;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the client was doing when something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// Connecting the socket.
    Connect,
    /// Reading the server's greeting or sending the client flags.
    Greeting,
    /// Haggling over one option (`NBD_OPT_*`).
    Option(u32),
    /// The TLS handshake after NBD_OPT_STARTTLS.
    TlsHandshake,
    /// One request on the wire (a piece of a split call).
    Request {
        command: u16,
        offset: u64,
        length: u64,
    },
    /// Sending NBD_CMD_DISC and closing.
    Disconnect,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Step::Connect => write!(f, "connecting"),
            Step::Greeting => write!(f, "in the greeting"),
            Step::Option(o) => write!(f, "in {}", option_text(o)),
            Step::TlsHandshake => write!(f, "in the TLS handshake"),
            Step::Request {
                command,
                offset,
                length,
            } => write!(
                f,
                "in {} of {length} bytes at offset {offset}",
                command_text(command)
            ),
            Step::Disconnect => write!(f, "disconnecting"),
        }
    }
}

/// How the server broke the protocol. The stream is out of step after
/// one: the client drops the connection (a "hard disconnect").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    #[error(transparent)]
    Malformed(#[from] ReplyError),
    #[error("the server speaks oldstyle negotiation, which has no options")]
    Oldstyle,
    #[error("the server does not offer fixed newstyle negotiation (NBD_FLAG_FIXED_NEWSTYLE)")]
    NotFixedNewstyle,
    #[error("the reply is for {} but {} was sent", option_text(*.answered), option_text(*.sent))]
    WrongOption { sent: u32, answered: u32 },
    #[error("reply type {}, which this option does not have", reply_text(*.reply))]
    UnexpectedReply { reply: u32 },
    #[error("an option reply of {length} bytes (more than {limit})")]
    OptionReplyTooLong { length: u32, limit: u32 },
    #[error("bytes arrived after NBD_OPT_STARTTLS's acknowledgement, before the TLS handshake")]
    DataBeforeTls,
    #[error("NBD_REP_ACK came before the NBD_INFO_EXPORT information")]
    NoExportInfo,
    #[error(
        "block size constraints minimum {} / preferred {} / maximum {} break the protocol's rules",
        .0.minimum, .0.preferred, .0.maximum
    )]
    BadBlockSize(BlockSize),
    #[error("the reply's cookie is {found:#x}, the request's {expected:#x}")]
    WrongCookie { expected: u64, found: u64 },
    #[error("a structured reply chunk came, but structured replies were not negotiated")]
    StructuredNotNegotiated,
    #[error("a simple reply without error came to a read, but structured replies were negotiated")]
    SimpleReplyToRead,
    #[error("a chunk of type {kind:#06x}, which this request's reply cannot have")]
    UnexpectedChunk { kind: u16 },
    #[error("an NBD_REPLY_TYPE_NONE chunk without NBD_REPLY_FLAG_DONE")]
    NoneNotLast,
    #[error("a chunk of {length} bytes (more than {limit})")]
    ChunkTooLong { length: u32, limit: u32 },
    #[error("the reply has {length} bytes at offset {offset}, outside the request")]
    OutsideRequest { offset: u64, length: u64 },
    #[error("the reply has {length} bytes at offset {offset} twice")]
    Overlap { offset: u64, length: u64 },
    #[error("the reply succeeded without the {length} bytes at offset {offset}")]
    Incomplete { offset: u64, length: u64 },
    #[error("block status for context id {id}, which was not negotiated")]
    UnknownContext { id: u32 },
    #[error("the reply succeeded without block status for base:allocation")]
    MissingStatus,
    #[error("the reply has block status for base:allocation twice")]
    DuplicateStatus,
}

/// Why a [`Client`](super::Client) call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream failed (closed, reset, timed out).
    #[error("NBD export {export:?}: I/O error {step}: {source}")]
    Io {
        export: String,
        step: Step,
        #[source]
        source: io::Error,
    },
    /// TLS failed: the handshake (an untrusted certificate, a refused
    /// client certificate) or a record later.
    #[error("NBD export {export:?}: TLS failed {step}: {source}")]
    Tls {
        export: String,
        step: Step,
        #[source]
        source: io::Error,
    },
    /// The server broke the protocol; the connection is dropped.
    #[error("NBD export {export:?}: the server broke the protocol {step}: {violation}")]
    Protocol {
        export: String,
        step: Step,
        violation: Violation,
    },
    /// The server answered an option with an error (`NBD_REP_ERR_*`):
    /// an unknown export, TLS required, a policy.
    #[error(
        "NBD export {export:?}: the server refused {} with {}{}",
        option_text(*.option), reply_text(*.reply), colon(.message)
    )]
    Refused {
        export: String,
        option: u32,
        reply: u32,
        message: String,
    },
    /// The server failed a request with an error value (`NBD_E*`); the
    /// connection goes on.
    #[error(
        "NBD export {export:?}: {} of {length} bytes at offset {offset} failed with {}{}",
        command_text(*.command), errno_text(*.errno), colon(.message)
    )]
    Request {
        export: String,
        command: u16,
        offset: u64,
        length: u64,
        errno: u32,
        message: String,
    },
    /// A call's range ends past the end of the export (nothing was sent).
    #[error(
        "NBD export {export:?}: {} of {length} bytes at offset {offset} ends past the export's {size} bytes",
        command_text(*.command)
    )]
    OutOfRange {
        export: String,
        command: u16,
        offset: u64,
        length: u64,
        size: u64,
    },
    /// A call's range is not a multiple of the server's minimum block size
    /// (nothing was sent).
    #[error(
        "NBD export {export:?}: {} of {length} bytes at offset {offset} is not aligned to the server's minimum block size of {minimum} bytes",
        command_text(*.command)
    )]
    Misaligned {
        export: String,
        command: u16,
        offset: u64,
        length: u64,
        minimum: u32,
    },
    /// The server did not offer what the call needs (nothing was sent).
    #[error("NBD export {export:?}: the server does not offer {what}")]
    Unsupported { export: String, what: &'static str },
    /// An earlier I/O, TLS or protocol error (or NBD_ESHUTDOWN) ended the
    /// connection.
    #[error("NBD export {export:?}: the connection is closed after an earlier error: {reason}")]
    Closed { export: String, reason: String },
}

impl Error {
    /// A short, stable name of the error kind (for C callers and scripts).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Tls { .. } => "tls",
            Error::Protocol { .. } => "protocol",
            Error::Refused { .. } => "refused",
            Error::Request { .. } => "request",
            Error::OutOfRange { .. } => "out_of_range",
            Error::Misaligned { .. } => "misaligned",
            Error::Unsupported { .. } => "unsupported",
            Error::Closed { .. } => "closed",
        }
    }

    /// The server's error value of a failed request (`NBD_EPERM`,
    /// `NBD_ENOSPC`, …; the same numbers as Linux's errno); `None` for
    /// every other error.
    pub fn errno(&self) -> Option<u32> {
        match self {
            Error::Request { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The server's message for a refused option or a failed request
    /// (empty when it sent none).
    pub fn server_message(&self) -> Option<&str> {
        match self {
            Error::Refused { message, .. } | Error::Request { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The option reply type of a refused option (`NBD_REP_ERR_*`).
    pub fn refusal(&self) -> Option<u32> {
        match self {
            Error::Refused { reply, .. } => Some(*reply),
            _ => None,
        }
    }

    /// An I/O error of the stream; a TLS failure underneath it (rustls
    /// reports those as I/O errors) becomes [`Error::Tls`].
    pub(crate) fn io(export: &str, step: Step, source: io::Error) -> Error {
        let export = export.to_string();
        let tls = source.get_ref().is_some_and(|e| e.is::<rustls::Error>());
        if tls {
            Error::Tls {
                export,
                step,
                source,
            }
        } else {
            Error::Io {
                export,
                step,
                source,
            }
        }
    }

    pub(crate) fn protocol(export: &str, step: Step, violation: impl Into<Violation>) -> Error {
        Error::Protocol {
            export: export.to_string(),
            step,
            violation: violation.into(),
        }
    }

    /// Whether the stream is out of step (or gone) after this error.
    pub(crate) fn ends_connection(&self) -> bool {
        matches!(
            self,
            Error::Io { .. } | Error::Tls { .. } | Error::Protocol { .. } | Error::Closed { .. }
        )
    }
}

fn colon(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

fn option_text(option: u32) -> String {
    option_name(option).map_or_else(|| format!("option {option}"), str::to_string)
}

fn reply_text(reply: u32) -> String {
    reply_name(reply).map_or_else(|| format!("reply type {reply:#x}"), str::to_string)
}

fn command_text(command: u16) -> String {
    command_name(command).map_or_else(|| format!("command {command}"), str::to_string)
}

fn errno_text(errno: u32) -> String {
    match errno_name(errno) {
        Some((name, meaning)) => format!("{name} ({meaning})"),
        None => format!("error value {errno}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_export_the_step_and_the_server_words() {
        let e = Error::Request {
            export: "vm1/disk0".into(),
            command: NBD_CMD_WRITE,
            offset: 4096,
            length: 512,
            errno: NBD_EPERM,
            message: "the export is read-only".into(),
        };
        assert_eq!(
            e.to_string(),
            "NBD export \"vm1/disk0\": NBD_CMD_WRITE of 512 bytes at offset 4096 failed with \
             EPERM (operation not permitted): the export is read-only"
        );
        assert_eq!((e.errno(), e.kind()), (Some(NBD_EPERM), "request"));
        let e = Error::Refused {
            export: "nope".into(),
            option: NBD_OPT_GO,
            reply: NBD_REP_ERR_UNKNOWN,
            message: "no such export".into(),
        };
        assert_eq!(
            e.to_string(),
            "NBD export \"nope\": the server refused NBD_OPT_GO with NBD_REP_ERR_UNKNOWN: no such export"
        );
        let e = Error::protocol(
            "d",
            Step::Request {
                command: NBD_CMD_READ,
                offset: 0,
                length: 4096,
            },
            Violation::WrongCookie {
                expected: 1,
                found: 2,
            },
        );
        assert_eq!(
            e.to_string(),
            "NBD export \"d\": the server broke the protocol in NBD_CMD_READ of 4096 bytes at \
             offset 0: the reply's cookie is 0x2, the request's 0x1"
        );
        assert!(e.ends_connection());
    }
}
