//! MS-VHDX §2.4 sector bitmaps: one bit per logical sector, bit 0 of byte 0
//! first; 1 means "read this sector from this file", 0 "from the parent".

/// Whether bit `i` is set.
pub fn get(bits: &[u8], i: u64) -> bool {
    bits[(i / 8) as usize] >> (i % 8) & 1 == 1
}

/// Sets bits `start..start+count` to `value`.
pub fn set_range(bits: &mut [u8], start: u64, count: u64, value: bool) {
    let mut i = start;
    let end = start + count;
    while i < end {
        if i.is_multiple_of(8) && end - i >= 8 {
            let n = ((end - i) / 8) as usize;
            let b = (i / 8) as usize;
            bits[b..b + n].fill(if value { 0xff } else { 0 });
            i += n as u64 * 8;
            continue;
        }
        let (byte, bit) = ((i / 8) as usize, i % 8);
        if value {
            bits[byte] |= 1 << bit;
        } else {
            bits[byte] &= !(1 << bit);
        }
        i += 1;
    }
}

/// Length of the run of equal bits starting at `start`, at most `max`.
pub fn run_len(bits: &[u8], start: u64, max: u64) -> u64 {
    let v = get(bits, start);
    let full = if v { 0xff } else { 0 };
    let mut n = 1;
    while n < max {
        let i = start + n;
        if i.is_multiple_of(8) && max - n >= 8 && bits[(i / 8) as usize] == full {
            n += 8;
        } else if get(bits, i) == v {
            n += 1;
        } else {
            break;
        }
    }
    n.min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn set_range_matches_a_bool_model(ops in proptest::collection::vec((0u64..500, 0u64..100, any::<bool>()), 1..20)) {
            let mut bits = vec![0u8; 80];
            let mut model = vec![false; 640];
            for (s, c, v) in ops {
                set_range(&mut bits, s, c, v);
                for m in &mut model[s as usize..(s + c) as usize] { *m = v; }
            }
            for (i, m) in model.iter().enumerate() {
                prop_assert_eq!(get(&bits, i as u64), *m);
            }
            let mut i = 0u64;
            while i < 640 {
                let n = run_len(&bits, i, 640 - i);
                prop_assert!(n >= 1);
                for j in i..i + n { prop_assert_eq!(model[j as usize], model[i as usize]); }
                if i + n < 640 { prop_assert_ne!(model[(i + n) as usize], model[i as usize]); }
                i += n;
            }
        }
    }
}
