//! Streaming `.xz` decompression through the system liblzma (for `nocloud-amd64.raw.xz`).

use std::io::{Read, Write};

use crate::Error;

/// Decompress an xz stream from `input` into `output`; returns the number of bytes written.
///
/// Multi-stream files (concatenated `.xz`, as `pixz`/`xz -T` may write) are decoded whole.
pub fn decompress<R: Read, W: Write + ?Sized>(input: R, output: &mut W) -> Result<u64, Error> {
    let mut decoder = xz2::read::XzDecoder::new_multi_decoder(input);
    std::io::copy(&mut decoder, output).map_err(|source| Error::Xz { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(data: &[u8]) -> Vec<u8> {
        let mut enc = xz2::write::XzEncoder::new(Vec::new(), 6);
        enc.write_all(data).expect("write");
        enc.finish().expect("finish")
    }

    #[test]
    fn round_trip_large_input() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let packed = compress(&data);
        assert!(packed.len() < data.len() / 10);
        let mut out = Vec::new();
        let n = decompress(packed.as_slice(), &mut out).expect("decompress");
        assert_eq!(n, data.len() as u64);
        assert_eq!(out, data);
    }

    #[test]
    fn concatenated_streams() {
        let mut packed = compress(b"first ");
        packed.extend(compress(b"second"));
        let mut out = Vec::new();
        decompress(packed.as_slice(), &mut out).expect("decompress");
        assert_eq!(out, b"first second");
    }

    #[test]
    fn corrupt_input_is_an_error() {
        let mut out = Vec::new();
        let err = decompress(&b"not xz at all"[..], &mut out).expect_err("corrupt");
        assert!(matches!(err, Error::Xz { .. }));
    }
}
