//! BER to DER, as far as PKCS#7 needs it. AWS's RSA-2048 signature is what
//! OpenSSL's streaming signer writes: indefinite lengths and the content as a
//! constructed OCTET STRING in segments. The `der` crate (rightly) reads DER
//! only, so the envelope is normalised first: definite lengths, and constructed
//! OCTET STRINGs joined into one primitive. Nothing else changes, so the bytes
//! the signature covers (the content, the DER signed attributes) stay the same.

use super::IidError;

/// Deeper nesting than any PKCS#7 needs is refused, not recursed into.
const MAX_DEPTH: usize = 32;
const OCTET_STRING: u8 = 0x04;
const CONSTRUCTED: u8 = 0x20;

/// The DER form of one BER value filling all of `input`.
pub(super) fn to_der(input: &[u8]) -> Result<Vec<u8>, IidError> {
    let mut out = Vec::with_capacity(input.len());
    let used = value(input, 0, &mut out)?;
    if used != input.len() {
        return Err(malformed("data after the PKCS#7 envelope"));
    }
    Ok(out)
}

fn malformed(why: &str) -> IidError {
    IidError::Malformed(format!("rsa2048 signature: {why}"))
}

/// Reads one value at the start of `input`, appends its DER form to `out`, and
/// returns how many input bytes it took.
fn value(input: &[u8], depth: usize, out: &mut Vec<u8>) -> Result<usize, IidError> {
    if depth > MAX_DEPTH {
        return Err(malformed("nested too deeply"));
    }
    let &tag = input.first().ok_or_else(|| malformed("truncated"))?;
    if tag & 0x1f == 0x1f {
        return Err(malformed("multi-byte tags are not PKCS#7's"));
    }
    let (length, header) = length(&input[1..])?;
    let body_start = 1 + header;
    let mut body = Vec::new();
    let end = match length {
        Some(n) => {
            let end = body_start
                .checked_add(n)
                .filter(|&end| end <= input.len())
                .ok_or_else(|| malformed("truncated"))?;
            if tag & CONSTRUCTED == 0 {
                body.extend_from_slice(&input[body_start..end]);
            } else {
                children(&input[body_start..end], depth, &mut body)?;
            }
            end
        }
        None if tag & CONSTRUCTED == 0 => {
            return Err(malformed("indefinite length on a primitive value"));
        }
        None => body_start + indefinite_children(&input[body_start..], depth, &mut body)?,
    };
    // a constructed OCTET STRING's segments are its content, joined
    let tag = if tag == OCTET_STRING | CONSTRUCTED {
        body = joined_octets(&body)?;
        OCTET_STRING
    } else {
        tag
    };
    out.push(tag);
    definite_length(body.len(), out);
    out.extend_from_slice(&body);
    Ok(end)
}

/// Children filling `input` exactly.
fn children(mut input: &[u8], depth: usize, out: &mut Vec<u8>) -> Result<(), IidError> {
    while !input.is_empty() {
        let used = value(input, depth + 1, out)?;
        input = &input[used..];
    }
    Ok(())
}

/// Children up to the end-of-contents octets; returns the bytes taken, those
/// octets included.
fn indefinite_children(input: &[u8], depth: usize, out: &mut Vec<u8>) -> Result<usize, IidError> {
    let mut at = 0;
    loop {
        match input.get(at..at + 2) {
            Some([0, 0]) => return Ok(at + 2),
            Some(_) => at += value(&input[at..], depth + 1, out)?,
            None => return Err(malformed("indefinite length without its end")),
        }
    }
}

/// The contents of a run of DER OCTET STRINGs (the segments, already DER).
fn joined_octets(mut segments: &[u8]) -> Result<Vec<u8>, IidError> {
    let mut joined = Vec::with_capacity(segments.len());
    while !segments.is_empty() {
        if segments[0] != OCTET_STRING {
            return Err(malformed("a segment of an OCTET STRING is not one"));
        }
        let (Some(n), header) = length(&segments[1..])? else {
            return Err(malformed("truncated"));
        };
        let start = 1 + header;
        let end = start + n;
        joined.extend_from_slice(
            segments
                .get(start..end)
                .ok_or_else(|| malformed("truncated"))?,
        );
        segments = &segments[end..];
    }
    Ok(joined)
}

/// A length (None: indefinite) and the bytes it took.
fn length(input: &[u8]) -> Result<(Option<usize>, usize), IidError> {
    let &first = input.first().ok_or_else(|| malformed("truncated"))?;
    match first {
        0x80 => Ok((None, 1)),
        n if n < 0x80 => Ok((Some(usize::from(n)), 1)),
        n => {
            let count = usize::from(n & 0x7f);
            // 4 bytes of length is 4 GiB: far beyond any payload accepted
            if count > 4 {
                return Err(malformed("length too large"));
            }
            let bytes = input.get(1..=count).ok_or_else(|| malformed("truncated"))?;
            let n = bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b));
            Ok((Some(n), 1 + count))
        }
    }
}

fn definite_length(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        // fits in the short form
        out.push(n as u8);
        return;
    }
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    out.push(0x80 | (bytes.len() - skip) as u8);
    out.extend_from_slice(&bytes[skip..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indefinite_lengths_and_segmented_octets_become_der() {
        // SEQUENCE(indef) { OCTET STRING(constructed, indef) { "ab", "c" }, INTEGER 5 }
        let ber = [
            0x30, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0x00, 0x00, 0x02,
            0x01, 0x05, 0x00, 0x00,
        ];
        let der = to_der(&ber).unwrap();
        assert_eq!(
            der,
            [0x30, 0x08, 0x04, 0x03, b'a', b'b', b'c', 0x02, 0x01, 0x05]
        );
        assert_eq!(to_der(&der).unwrap(), der, "DER stays as it is");
    }

    #[test]
    fn broken_encodings_are_refused_not_panicked_on() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x80, 0x02, 0x01, 0x05],
            &[0x30, 0x05, 0x02, 0x01],
            &[0x04, 0x80, 0x00, 0x00],
            &[0x30, 0x00, 0x00],
            &[0x1f, 0x00],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x24, 0x03, 0x02, 0x01, 0x05],
        ] {
            assert!(to_der(bad).is_err(), "{bad:02x?}");
        }
        let deep: Vec<u8> = std::iter::repeat_n([0x30, 0x80], 40).flatten().collect();
        assert!(to_der(&deep).is_err());
    }
}
