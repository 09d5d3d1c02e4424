//! The library's version, its error texts, and remote settings.

use super::args::{self, call};
use crate::error::{self, Failure, CODES};
use std::ffi::{c_char, c_int};

/// The ABI version, semantic: a new minor adds functions, a new major may
/// change or remove them. The shared library's soname carries the major.
pub const REFPOINT_VERSION_MAJOR: u32 = 1;
pub const REFPOINT_VERSION_MINOR: u32 = 0;
pub const REFPOINT_VERSION_PATCH: u32 = 0;

/// The ABI version as text, e.g. "1.0.0" (compare with the
/// `REFPOINT_VERSION_*` macros the program was compiled with).
#[no_mangle]
pub extern "C" fn refpoint_version() -> *const c_char {
    c"1.0.0".as_ptr()
}

/// The message of this thread's last failed call ("" if none); valid
/// until this thread's next failing call.
#[no_mangle]
pub extern "C" fn refpoint_last_error() -> *const c_char {
    error::last()
}

/// The stable name of a code (e.g. "unknown_id"), or "unknown".
#[no_mangle]
pub extern "C" fn refpoint_error_name(code: c_int) -> *const c_char {
    CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or(c"unknown", |(_, n)| n)
        .as_ptr()
}

/// 1 when `code` is a tracking error: the tracking cannot prove which
/// ranges changed, so the backup must be full.
#[no_mangle]
pub extern "C" fn refpoint_is_tracking_error(code: c_int) -> c_int {
    c_int::from(
        (error::REFPOINT_E_TRACKING_FAILED..=error::REFPOINT_E_TRACKING_DISABLED).contains(&code),
    )
}

/// How `refpoint+https://` handles reach a remote daemon; any NULL
/// argument falls back to its environment variable: `token` to
/// `REFPOINT_TOKEN`, `ca_file` (PEM of the CA that issued the daemon's
/// certificate) to `REFPOINT_CA`, `cert_file` and `key_file` (a client
/// certificate, for a daemon started with `--tls-client-ca`) to
/// `REFPOINT_CERT` and `REFPOINT_KEY`. Applies to handles opened after.
///
/// # Safety
/// Each argument is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn refpoint_config_remote(
    token: *const c_char,
    ca_file: *const c_char,
    cert_file: *const c_char,
    key_file: *const c_char,
) -> c_int {
    call(|| {
        // SAFETY: as the caller promises.
        let s = crate::remote::Settings {
            token: unsafe { args::optional_text(token, "token") }?.map(Into::into),
            ca_file: unsafe { args::optional_text(ca_file, "ca_file") }?.map(Into::into),
            cert_file: unsafe { args::optional_text(cert_file, "cert_file") }?.map(Into::into),
            key_file: unsafe { args::optional_text(key_file, "key_file") }?.map(Into::into),
        };
        if s.cert_file.is_some() != s.key_file.is_some() {
            return Err(Failure::invalid(
                "give both cert_file and key_file, or neither",
            ));
        }
        crate::remote::configure(s);
        Ok(())
    })
}
