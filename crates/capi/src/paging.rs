//! One page of an allocation map or of changed ranges, as
//! `QueryChangesVirtualDisk` pages: at most `max` ranges from `offset`,
//! and how many bytes from `offset` they account for. When that equals
//! the length asked, the caller is done (a length past the end of the
//! disk is clamped: nothing lies there).

#![forbid(unsafe_code)]

use crate::error::{Failure, Result, REFPOINT_E_BUFFER_TOO_SMALL, REFPOINT_E_CONNECTION};
use crate::handle::Handle;
use api::ChangesQuery;

/// How much of the disk one allocation query looks at: a page stops as
/// soon as it is full, so a small buffer never maps the whole disk.
const WINDOW: u64 = 1 << 30;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// (offset, length), in order, not touching each other.
    pub ranges: Vec<(u64, u64)>,
    pub processed: u64,
}

/// The clamped end of `offset..offset+length`; an offset past the end of
/// the disk is out of range.
fn window(h: &Handle, offset: u64, length: u64, max: usize) -> Result<u64> {
    if max == 0 {
        return Err(Failure::new(
            REFPOINT_E_BUFFER_TOO_SMALL,
            "ranges has room for no range (max_ranges is 0)",
        ));
    }
    h.check_range(offset, 0)?;
    Ok(offset + length.min(h.size - offset))
}

fn push(ranges: &mut Vec<(u64, u64)>, offset: u64, length: u64) {
    match ranges.last_mut() {
        Some((o, l)) if *o + *l == offset => *l += length,
        _ => ranges.push((offset, length)),
    }
}

/// The ranges of `offset..offset+length` that may hold data.
pub fn allocation(h: &mut Handle, offset: u64, length: u64, max: usize) -> Result<Page> {
    let end = window(h, offset, length, max)?;
    let mut page = Page::default();
    let mut pos = offset;
    while pos < end {
        let len = (end - pos).min(WINDOW);
        for e in h.allocation(pos, len)? {
            if !e.allocated {
                continue;
            }
            let joins = page.ranges.last().is_some_and(|(o, l)| o + l == e.offset);
            if page.ranges.len() == max && !joins {
                page.processed = e.offset - offset;
                return Ok(page);
            }
            push(&mut page.ranges, e.offset, e.length);
        }
        pos += len;
    }
    page.processed = length;
    Ok(page)
}

/// The ranges changed since `since` (until `until`) in
/// `offset..offset+length`. The answer is checked, not trusted: a range
/// outside the window is clipped, more ranges than asked shorten the page
/// to the first one left out, and a page that makes no progress is an
/// error (a caller looping on it would never end).
pub fn changes(
    h: &mut Handle,
    since: &str,
    until: Option<&str>,
    offset: u64,
    length: u64,
    max: usize,
) -> Result<Page> {
    let end = window(h, offset, length, max)?;
    let q = ChangesQuery {
        since: since.into(),
        until: until.map(Into::into),
        offset,
        length: Some(end - offset),
        max_ranges: Some(max as u64),
    };
    let c = h.changes(&q)?;
    let mut page = Page::default();
    let mut processed = c.processed_length.min(end - offset);
    for r in &c.ranges {
        let (from, to) = (
            r.offset.max(offset),
            r.offset.saturating_add(r.length).min(end),
        );
        if from >= to {
            continue;
        }
        if page.ranges.len() == max {
            processed = processed.min(from - offset);
            break;
        }
        push(&mut page.ranges, from, to - from);
    }
    if processed == 0 && end > offset {
        return Err(Failure::new(
            REFPOINT_E_CONNECTION,
            format!(
                "{}: the changes from offset {offset} came back without progress",
                h.name
            ),
        ));
    }
    page.processed = if offset + processed == end {
        length
    } else {
        processed
    };
    Ok(page)
}
