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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soname_carries_the_abi_major() {
        assert_eq!(
            env!("REFPOINT_SONAME"),
            format!("librefpoint.so.{REFPOINT_VERSION_MAJOR}")
        );
        let text = unsafe { std::ffi::CStr::from_ptr(refpoint_version()) };
        assert_eq!(
            text.to_str().unwrap(),
            format!("{REFPOINT_VERSION_MAJOR}.{REFPOINT_VERSION_MINOR}.{REFPOINT_VERSION_PATCH}")
        );
    }

    #[test]
    fn every_code_has_one_name_and_tracking_codes_are_told_apart() {
        let mut names: Vec<_> = CODES.iter().map(|(_, n)| n.to_str().unwrap()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CODES.len());
        for (code, name) in CODES {
            let got = unsafe { std::ffi::CStr::from_ptr(refpoint_error_name(*code)) };
            assert_eq!(got, *name);
            let tracking = refpoint_is_tracking_error(*code) == 1;
            assert_eq!(
                tracking,
                *code <= error::REFPOINT_E_TRACKING_DISABLED,
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_panic_becomes_the_internal_code_with_its_message() {
        let rc = crate::abi::args::call(|| panic!("boom in a test"));
        assert_eq!(rc, error::REFPOINT_E_INTERNAL);
        let msg = unsafe { std::ffi::CStr::from_ptr(refpoint_last_error()) };
        assert!(msg.to_str().unwrap().contains("boom in a test"), "{msg:?}");
    }
}
