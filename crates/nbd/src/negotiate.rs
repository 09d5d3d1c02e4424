//! The handshake phase (§ "Fixed newstyle negotiation"): greeting, option
//! haggling, STARTTLS, meta context selection, until NBD_OPT_GO or
//! NBD_OPT_EXPORT_NAME enters transmission.

use crate::device::BlockDevice;
use crate::option::{export_name, InfoRequest, MetaRequest, OptionError};
use crate::proto::*;
use crate::reply;
use crate::server::{Shared, Stream};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the handshake agreed on.
pub(crate) struct Session {
    pub export: String,
    pub device: Arc<dyn BlockDevice>,
    pub structured: bool,
    /// Selected meta contexts; a context's id is its index + 1.
    pub contexts: Vec<String>,
}

/// Why a connection ended during the handshake (logged, not sent).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeEnd {
    #[error("client aborted")]
    Aborted,
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

struct State {
    tls: bool,
    structured: bool,
    /// The export the meta context selection was made for, and the names.
    meta: Option<(String, Vec<String>)>,
}

/// Runs the handshake; on success returns the (possibly TLS-wrapped)
/// stream and the session.
pub(crate) async fn negotiate(
    mut s: Box<dyn Stream>,
    shared: &Shared,
    tls_required: bool,
) -> Result<(Box<dyn Stream>, Session), HandshakeEnd> {
    let mut greeting = Vec::with_capacity(18);
    greeting.extend(NBDMAGIC.to_be_bytes());
    greeting.extend(IHAVEOPT.to_be_bytes());
    greeting.extend((NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&greeting).await?;
    s.flush().await?;
    let client_flags = s.read_u32().await?;
    if client_flags & !(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES) != 0 {
        return Err(HandshakeEnd::Protocol(format!(
            "unknown client flags {client_flags:#x}"
        )));
    }
    let no_zeroes = client_flags & NBD_FLAG_C_NO_ZEROES != 0;
    let mut st = State {
        tls: false,
        structured: false,
        meta: None,
    };
    loop {
        let magic = s.read_u64().await?;
        if magic != IHAVEOPT {
            return Err(HandshakeEnd::Protocol(format!(
                "bad option magic {magic:#x}"
            )));
        }
        let option = s.read_u32().await?;
        let len = s.read_u32().await?;
        if len > MAX_OPTION_LEN {
            if option == NBD_OPT_EXPORT_NAME {
                return Err(HandshakeEnd::Protocol("export name too long".into()));
            }
            // Skip the payload so the stream stays in sync, then refuse.
            let skipped =
                tokio::io::copy(&mut (&mut s).take(len as u64), &mut tokio::io::sink()).await?;
            if skipped != len as u64 {
                return Err(HandshakeEnd::Protocol("truncated option".into()));
            }
            send(
                &mut s,
                option,
                NBD_REP_ERR_TOO_BIG,
                b"option payload too large",
            )
            .await?;
            continue;
        }
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data).await?;

        if tls_required && !st.tls && !matches!(option, NBD_OPT_STARTTLS | NBD_OPT_ABORT) {
            if option == NBD_OPT_EXPORT_NAME {
                return Err(HandshakeEnd::Protocol(
                    "NBD_OPT_EXPORT_NAME before TLS on a TLS-only listener".into(),
                ));
            }
            send(
                &mut s,
                option,
                NBD_REP_ERR_TLS_REQD,
                b"TLS is required: use NBD_OPT_STARTTLS",
            )
            .await?;
            continue;
        }

        match option {
            NBD_OPT_ABORT => {
                // The reply is optional; the client may already be gone.
                let _ = send(&mut s, option, NBD_REP_ACK, &[]).await;
                return Err(HandshakeEnd::Aborted);
            }
            NBD_OPT_EXPORT_NAME => {
                let name = export_name(&data).map_err(|e| HandshakeEnd::Protocol(e.to_string()))?;
                let device = open_export(shared, &name)
                    .await
                    .map_err(|e| HandshakeEnd::Protocol(format!("export {name:?}: {e}")))?;
                let mut b = Vec::new();
                b.extend(device.size().to_be_bytes());
                b.extend(transmission_flags(&*device, st.structured).to_be_bytes());
                if !no_zeroes {
                    b.extend([0u8; 124]);
                }
                s.write_all(&b).await?;
                s.flush().await?;
                let contexts = selected(&st, &name);
                return Ok((s, session(name, device, &st, contexts)));
            }
            NBD_OPT_LIST => {
                if !data.is_empty() {
                    send(
                        &mut s,
                        option,
                        NBD_REP_ERR_INVALID,
                        b"NBD_OPT_LIST takes no data",
                    )
                    .await?;
                    continue;
                }
                let exports = shared.exports.clone();
                let list = tokio::task::spawn_blocking(move || exports.list())
                    .await
                    .unwrap_or_default();
                for e in list {
                    send(
                        &mut s,
                        option,
                        NBD_REP_SERVER,
                        &reply::rep_server(&e.name, &e.description),
                    )
                    .await?;
                }
                send(&mut s, option, NBD_REP_ACK, &[]).await?;
            }
            NBD_OPT_STARTTLS => {
                if !data.is_empty() {
                    send(
                        &mut s,
                        option,
                        NBD_REP_ERR_INVALID,
                        b"NBD_OPT_STARTTLS takes no data",
                    )
                    .await?;
                    continue;
                }
                let Some(acceptor) = shared.tls.clone().filter(|_| !st.tls) else {
                    let (code, msg): (u32, &[u8]) = if st.tls {
                        (NBD_REP_ERR_INVALID, b"TLS is already on")
                    } else {
                        (NBD_REP_ERR_POLICY, b"this listener has no TLS certificate")
                    };
                    send(&mut s, option, code, msg).await?;
                    continue;
                };
                send(&mut s, option, NBD_REP_ACK, &[]).await?;
                let tls = acceptor
                    .accept(s)
                    .await
                    .map_err(|e| HandshakeEnd::Protocol(format!("TLS handshake: {e}")))?;
                s = Box::new(tls);
                // Nothing negotiated in clear text survives the upgrade.
                st = State {
                    tls: true,
                    structured: false,
                    meta: None,
                };
            }
            NBD_OPT_INFO | NBD_OPT_GO => {
                let Some((req, device)) =
                    option_export(&mut s, shared, option, InfoRequest::parse(&data)).await?
                else {
                    continue;
                };
                let flags = transmission_flags(&*device, st.structured);
                send(
                    &mut s,
                    option,
                    NBD_REP_INFO,
                    &reply::info_export(device.size(), flags),
                )
                .await?;
                if req.requests.contains(&NBD_INFO_NAME) {
                    send(
                        &mut s,
                        option,
                        NBD_REP_INFO,
                        &reply::info_string(NBD_INFO_NAME, &req.name),
                    )
                    .await?;
                }
                if req.requests.contains(&NBD_INFO_DESCRIPTION) {
                    if let Some(d) = device.description() {
                        send(
                            &mut s,
                            option,
                            NBD_REP_INFO,
                            &reply::info_string(NBD_INFO_DESCRIPTION, &d),
                        )
                        .await?;
                    }
                }
                let bs = device.block_size();
                send(
                    &mut s,
                    option,
                    NBD_REP_INFO,
                    &reply::info_block_size(bs.minimum, bs.preferred, bs.maximum),
                )
                .await?;
                send(&mut s, option, NBD_REP_ACK, &[]).await?;
                if option == NBD_OPT_GO {
                    let contexts = selected(&st, &req.name);
                    return Ok((s, session(req.name, device, &st, contexts)));
                }
            }
            NBD_OPT_STRUCTURED_REPLY => {
                if !data.is_empty() {
                    send(
                        &mut s,
                        option,
                        NBD_REP_ERR_INVALID,
                        b"NBD_OPT_STRUCTURED_REPLY takes no data",
                    )
                    .await?;
                    continue;
                }
                st.structured = true;
                send(&mut s, option, NBD_REP_ACK, &[]).await?;
            }
            NBD_OPT_LIST_META_CONTEXT | NBD_OPT_SET_META_CONTEXT => {
                let set = option == NBD_OPT_SET_META_CONTEXT;
                if set && !st.structured {
                    send(
                        &mut s,
                        option,
                        NBD_REP_ERR_INVALID,
                        b"negotiate NBD_OPT_STRUCTURED_REPLY first",
                    )
                    .await?;
                    continue;
                }
                let Some((req, device)) =
                    option_export(&mut s, shared, option, MetaRequest::parse(&data)).await?
                else {
                    continue;
                };
                let names = if set {
                    select_contexts(&*device, &req.queries)
                } else {
                    list_contexts(&*device, &req.queries)
                };
                for (i, name) in names.iter().enumerate() {
                    // LIST replies carry id 0; SET assigns index + 1.
                    let id = if set { i as u32 + 1 } else { 0 };
                    send(
                        &mut s,
                        option,
                        NBD_REP_META_CONTEXT,
                        &reply::meta_context(id, name),
                    )
                    .await?;
                }
                if set {
                    st.meta = Some((req.export, names));
                }
                send(&mut s, option, NBD_REP_ACK, &[]).await?;
            }
            _ => {
                let msg = format!("option {option} is not supported");
                send(&mut s, option, NBD_REP_ERR_UNSUP, msg.as_bytes()).await?;
            }
        }
    }
}

/// An option payload that names an export.
trait NamesExport {
    fn export(&self) -> &str;
}
impl NamesExport for InfoRequest {
    fn export(&self) -> &str {
        &self.name
    }
}
impl NamesExport for MetaRequest {
    fn export(&self) -> &str {
        &self.export
    }
}

/// The parsed option and its export; on a bad payload or an unknown
/// export, sends NBD_REP_ERR_INVALID or NBD_REP_ERR_UNKNOWN and gives `None`.
async fn option_export<T: NamesExport>(
    s: &mut Box<dyn Stream>,
    shared: &Shared,
    option: u32,
    parsed: Result<T, OptionError>,
) -> std::io::Result<Option<(T, Arc<dyn BlockDevice>)>> {
    let req = match parsed {
        Ok(r) => r,
        Err(e) => {
            send(s, option, NBD_REP_ERR_INVALID, e.to_string().as_bytes()).await?;
            return Ok(None);
        }
    };
    match open_export(shared, req.export()).await {
        Ok(d) => Ok(Some((req, d))),
        Err(e) => {
            let msg = format!("export {:?}: {e}", req.export());
            send(s, option, NBD_REP_ERR_UNKNOWN, msg.as_bytes()).await?;
            Ok(None)
        }
    }
}

/// Looks an export up off the async threads (opening a disk does I/O and
/// may wait for a checkpoint switch).
async fn open_export(shared: &Shared, name: &str) -> Result<Arc<dyn BlockDevice>, String> {
    let exports = shared.exports.clone();
    let name = name.to_string();
    tokio::task::spawn_blocking(move || exports.open(&name))
        .await
        .unwrap_or_else(|_| Err("opening the export failed".into()))
}

fn session(
    export: String,
    device: Arc<dyn BlockDevice>,
    st: &State,
    contexts: Vec<String>,
) -> Session {
    Session {
        export,
        device,
        structured: st.structured,
        contexts,
    }
}

/// The contexts selected for `export` (a selection for another export
/// does not carry over).
fn selected(st: &State, export: &str) -> Vec<String> {
    match &st.meta {
        Some((e, names)) if e == export => names.clone(),
        _ => Vec::new(),
    }
}

fn list_contexts(device: &dyn BlockDevice, queries: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let all = [String::new()];
    let queries = if queries.is_empty() {
        &all[..]
    } else {
        queries
    };
    for q in queries {
        if q.is_empty() || q == "base:" || q == BASE_ALLOCATION {
            out.push(BASE_ALLOCATION.into());
        }
        if !q.starts_with("base:") {
            out.extend(device.list_meta_contexts(q));
        }
    }
    out.dedup();
    out
}

fn select_contexts(device: &dyn BlockDevice, queries: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for q in queries {
        let ok = q == BASE_ALLOCATION || device.has_meta_context(q);
        if ok && !out.contains(q) {
            out.push(q.clone());
        }
    }
    out
}

pub(crate) fn transmission_flags(device: &dyn BlockDevice, structured: bool) -> u16 {
    let mut f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_CACHE;
    if device.read_only() {
        f |= NBD_FLAG_READ_ONLY;
    } else {
        f |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
    }
    if structured {
        f |= NBD_FLAG_SEND_DF;
    }
    if device.multi_conn() {
        f |= NBD_FLAG_CAN_MULTI_CONN;
    }
    f
}

async fn send(
    s: &mut Box<dyn Stream>,
    option: u32,
    reply: u32,
    data: &[u8],
) -> std::io::Result<()> {
    s.write_all(&reply::option_reply(option, reply, data))
        .await?;
    s.flush().await
}
