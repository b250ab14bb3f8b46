//! Test data for byte streams.

/// `len` bytes from `seed` that do not repeat at any buffer or record
/// size, so a byte lost, doubled or moved anywhere shows.
pub fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}
