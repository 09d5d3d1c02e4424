//! The client's side of the handshake (§ "Fixed newstyle negotiation",
//! "Option types"):
//!
//! ```text
//! greeting   NBDMAGIC IHAVEOPT + handshake flags ─► client flags
//!            (fixed newstyle required; NO_ZEROES when offered)
//! STARTTLS   if asked: ACK ─► TLS on the same stream (nothing negotiated
//!            before survives it, so it comes first); any error ends here
//! STRUCTURED_REPLY   ACK, or an error: simple replies from then on
//! SET_META_CONTEXT   base:allocation, if asked and structured; an error
//!            or no such context: no block status
//! GO         NBD_INFO_BLOCK_SIZE and _DESCRIPTION asked; NBD_REP_INFO…
//!            then ACK: transmission. ERR_UNSUP: NBD_OPT_EXPORT_NAME
//!            instead (old servers); other errors: Error::Refused
//! ```

use super::error::{Error, Result, Step, Violation};
use super::wire::{ReadWrite, Transport, Wire};
use super::{ExportInfo, Options, TransmissionFlags};
use crate::device::BlockSize;
use crate::option::{encode_option, InfoRequest, MetaRequest};
use crate::proto::*;
use crate::reply::{Info, MetaContextReply, OptionReplyHeader};
use rustls::{ClientConnection, StreamOwned};

/// Longest option reply data accepted (names, messages and descriptions
/// are at most 4 KiB each).
const MAX_OPTION_REPLY: u32 = 64 << 10;

/// What the handshake agreed on.
pub(super) struct Negotiated {
    pub wire: Wire,
    pub info: ExportInfo,
    pub structured: bool,
    /// The id the server gave `base:allocation`.
    pub allocation: Option<u32>,
    pub tls: bool,
}

struct Haggle<'a> {
    wire: Wire,
    export: &'a str,
}

impl Haggle<'_> {
    fn io(&self, step: Step) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |e| Error::io(self.export, step, e)
    }

    fn violation(&self, option: u32, v: impl Into<Violation>) -> Error {
        Error::protocol(self.export, Step::Option(option), v)
    }

    fn send(&mut self, option: u32, data: &[u8]) -> Result<()> {
        let b = encode_option(option, data);
        self.wire
            .send(&[&b])
            .map_err(|e| Error::io(self.export, Step::Option(option), e))
    }

    /// One reply to `option`: its type and data.
    fn reply(&mut self, option: u32) -> Result<(u32, Vec<u8>)> {
        let step = Step::Option(option);
        let h = self.wire.array().map_err(self.io(step))?;
        let h = OptionReplyHeader::parse(&h).map_err(|e| self.violation(option, e))?;
        if h.option != option {
            return Err(self.violation(
                option,
                Violation::WrongOption {
                    sent: option,
                    answered: h.option,
                },
            ));
        }
        if h.length > MAX_OPTION_REPLY {
            return Err(self.violation(
                option,
                Violation::OptionReplyTooLong {
                    length: h.length,
                    limit: MAX_OPTION_REPLY,
                },
            ));
        }
        let data = self.wire.bytes(h.length).map_err(self.io(step))?;
        Ok((h.reply, data))
    }

    fn refused(&self, option: u32, reply: u32, data: &[u8]) -> Error {
        Error::Refused {
            export: self.export.to_string(),
            option,
            reply,
            message: String::from_utf8_lossy(data).into_owned(),
        }
    }

    /// A reply type the option cannot have: an error reply refuses it,
    /// anything else breaks the protocol.
    fn unexpected(&self, option: u32, reply: u32, data: &[u8]) -> Error {
        if reply & NBD_REP_FLAG_ERROR != 0 {
            self.refused(option, reply, data)
        } else {
            self.violation(option, Violation::UnexpectedReply { reply })
        }
    }

    /// Reads the greeting and answers it; whether the server leaves out
    /// NBD_OPT_EXPORT_NAME's 124 zeroes (NO_ZEROES, offered and taken).
    fn greeting(&mut self) -> Result<bool> {
        let step = Step::Greeting;
        let magic = self.wire.u64().map_err(self.io(step))?;
        let malformed = |what, found, expected| {
            Error::protocol(
                self.export,
                step,
                crate::reply::ReplyError::BadMagic {
                    what,
                    found,
                    expected,
                },
            )
        };
        if magic != NBDMAGIC {
            return Err(malformed("greeting", magic, NBDMAGIC));
        }
        let magic = self.wire.u64().map_err(self.io(step))?;
        if magic == NBD_OLDSTYLE_MAGIC {
            return Err(Error::Unsupported {
                export: self.export.to_string(),
                what: "newstyle negotiation (it speaks oldstyle, without options)",
            });
        }
        if magic != IHAVEOPT {
            return Err(malformed("newstyle greeting", magic, IHAVEOPT));
        }
        let flags = u16::from_be_bytes(self.wire.array().map_err(self.io(step))?);
        if flags & NBD_FLAG_FIXED_NEWSTYLE == 0 {
            return Err(Error::Unsupported {
                export: self.export.to_string(),
                what: "fixed newstyle negotiation (NBD_FLAG_FIXED_NEWSTYLE)",
            });
        }
        let no_zeroes = flags & NBD_FLAG_NO_ZEROES != 0;
        let mut client = NBD_FLAG_C_FIXED_NEWSTYLE;
        if no_zeroes {
            client |= NBD_FLAG_C_NO_ZEROES;
        }
        self.wire
            .send(&[&client.to_be_bytes()])
            .map_err(self.io(step))?;
        Ok(no_zeroes)
    }

    fn start_tls(mut self, tls: &super::Tls) -> Result<Self> {
        let option = NBD_OPT_STARTTLS;
        self.send(option, &[])?;
        let (reply, data) = self.reply(option)?;
        if reply != NBD_REP_ACK {
            return Err(self.unexpected(option, reply, &data));
        }
        // Anything after the ACK would be read as if it came through TLS.
        if self.wire.buffered() != 0 {
            return Err(self.violation(option, Violation::DataBeforeTls));
        }
        let export = self.export;
        let tls_error = |e: std::io::Error| Error::Tls {
            export: export.to_string(),
            step: Step::TlsHandshake,
            source: e,
        };
        let Transport::Plain(mut sock) = self.wire.into_transport() else {
            unreachable!("NBD_OPT_STARTTLS is sent once, on a plain stream")
        };
        let mut conn = ClientConnection::new(tls.config.clone(), tls.server_name.clone())
            .map_err(|e| tls_error(std::io::Error::other(e)))?;
        // The whole handshake now, so that its failures are named as such.
        while conn.is_handshaking() {
            conn.complete_io(&mut sock).map_err(tls_error)?;
        }
        Ok(Haggle {
            wire: Wire::new(Transport::Tls(Box::new(StreamOwned::new(conn, sock)))),
            export,
        })
    }

    fn structured_reply(&mut self) -> Result<bool> {
        let option = NBD_OPT_STRUCTURED_REPLY;
        self.send(option, &[])?;
        match self.reply(option)? {
            (NBD_REP_ACK, _) => Ok(true),
            // Refusals that no other option would escape end the session.
            (r @ (NBD_REP_ERR_TLS_REQD | NBD_REP_ERR_SHUTDOWN), data) => {
                Err(self.refused(option, r, &data))
            }
            (r, _) if r & NBD_REP_FLAG_ERROR != 0 => Ok(false),
            (r, data) => Err(self.unexpected(option, r, &data)),
        }
    }

    /// Selects `base:allocation`; its id, if the server has it.
    fn base_allocation(&mut self) -> Result<Option<u32>> {
        let option = NBD_OPT_SET_META_CONTEXT;
        let req = MetaRequest {
            export: self.export.to_string(),
            queries: vec![BASE_ALLOCATION.to_string()],
        };
        self.send(option, &req.encode())?;
        let mut id = None;
        loop {
            match self.reply(option)? {
                (NBD_REP_META_CONTEXT, data) => {
                    let m =
                        MetaContextReply::parse(&data).map_err(|e| self.violation(option, e))?;
                    if m.name == BASE_ALLOCATION {
                        id = Some(m.id);
                    }
                }
                (NBD_REP_ACK, _) => return Ok(id),
                (r @ (NBD_REP_ERR_TLS_REQD | NBD_REP_ERR_SHUTDOWN), data) => {
                    return Err(self.refused(option, r, &data))
                }
                // Not offered (or an unknown export, which GO will say).
                (r, _) if r & NBD_REP_FLAG_ERROR != 0 => return Ok(None),
                (r, data) => return Err(self.unexpected(option, r, &data)),
            }
        }
    }

    /// NBD_OPT_GO; `None` if the server does not know the option.
    fn go(&mut self) -> Result<Option<ExportInfo>> {
        let option = NBD_OPT_GO;
        let req = InfoRequest {
            name: self.export.to_string(),
            requests: vec![NBD_INFO_BLOCK_SIZE, NBD_INFO_DESCRIPTION],
        };
        self.send(option, &req.encode())?;
        let mut export = None;
        let mut block_size = BlockSize::default();
        let mut description = None;
        loop {
            match self.reply(option)? {
                (NBD_REP_INFO, data) => {
                    match Info::parse(&data).map_err(|e| self.violation(option, e))? {
                        Info::Export { size, flags } => export = Some((size, flags)),
                        Info::BlockSize(b) => {
                            block_size = valid(b)
                                .ok_or_else(|| self.violation(option, Violation::BadBlockSize(b)))?
                        }
                        Info::Description(d) => description = Some(d),
                        // Information a client does not use is ignored.
                        Info::Name(_) | Info::Other { .. } => {}
                    }
                }
                (NBD_REP_ACK, _) => {
                    let Some((size, flags)) = export else {
                        return Err(self.violation(option, Violation::NoExportInfo));
                    };
                    return Ok(Some(ExportInfo {
                        name: self.export.to_string(),
                        size,
                        flags: TransmissionFlags(flags),
                        block_size,
                        description,
                    }));
                }
                (NBD_REP_ERR_UNSUP, _) => return Ok(None),
                (r, data) => return Err(self.unexpected(option, r, &data)),
            }
        }
    }

    /// NBD_OPT_EXPORT_NAME, for servers without NBD_OPT_GO: the server
    /// answers with size and flags, or closes the connection.
    fn export_name(&mut self, no_zeroes: bool) -> Result<ExportInfo> {
        let option = NBD_OPT_EXPORT_NAME;
        self.send(option, self.export.as_bytes())?;
        let step = Step::Option(option);
        let size = self.wire.u64().map_err(self.io(step))?;
        let flags = u16::from_be_bytes(self.wire.array().map_err(self.io(step))?);
        if !no_zeroes {
            self.wire.array::<124>().map_err(self.io(step))?;
        }
        Ok(ExportInfo {
            name: self.export.to_string(),
            size,
            flags: TransmissionFlags(flags),
            block_size: BlockSize::default(),
            description: None,
        })
    }
}

/// Block size constraints a client can follow (§ "Size constraints"): a
/// power-of-two minimum of at most 64 KiB, a power-of-two preferred size
/// at least that, a maximum at least the minimum. (The spec asks more of
/// the last two; servers that round differently still work.)
fn valid(b: BlockSize) -> Option<BlockSize> {
    let ok = b.minimum.is_power_of_two()
        && b.minimum <= 1 << 16
        && b.preferred.is_power_of_two()
        && b.preferred >= b.minimum
        && b.maximum >= b.minimum;
    ok.then_some(b)
}

pub(super) fn negotiate(stream: Box<dyn ReadWrite>, o: &Options) -> Result<Negotiated> {
    let mut h = Haggle {
        wire: Wire::new(Transport::Plain(stream)),
        export: &o.export,
    };
    let no_zeroes = h.greeting()?;
    if let Some(tls) = &o.tls {
        h = h.start_tls(tls)?;
    }
    let structured = o.structured_replies && h.structured_reply()?;
    let allocation = if structured && o.base_allocation {
        h.base_allocation()?
    } else {
        None
    };
    let info = match h.go()? {
        Some(info) => info,
        None => h.export_name(no_zeroes)?,
    };
    Ok(Negotiated {
        wire: h.wire,
        info,
        structured,
        allocation,
        tls: o.tls.is_some(),
    })
}
