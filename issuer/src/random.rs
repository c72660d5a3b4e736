//! Randomness from the system CSPRNG (aws-lc).

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// The system random source failed: nothing random can be made.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the system random source failed")]
pub struct RandomFailed;

/// A random 128-bit certificate serial: positive (top bit clear) and never zero.
pub(crate) fn serial() -> Result<[u8; 16], RandomFailed> {
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| RandomFailed)?;
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    Ok(serial)
}

/// `n` random bytes, hex-encoded.
pub(crate) fn hex_token(n: usize) -> Result<String, RandomFailed> {
    let mut bytes = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RandomFailed)?;
    Ok(hex(&bytes))
}

/// Lower-case hex, as serials and tokens are shown.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
