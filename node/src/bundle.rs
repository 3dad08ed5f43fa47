//! Several readings of one topic in one gossip message: under load a node signs one message
//! for many readings instead of one each, and each receiver verifies one signature for them
//! (pure, no IO).
//!
//! A bundle is the DAG-CBOR map `{"readings": [block, block, ...]}` whose elements are the
//! readings' own block bytes, so every reading keeps its bytes and its CID. A lone reading is
//! gossiped as itself, as before: a peer that publishes slowly never sends a bundle, and Kubo
//! or js-libp2p peers relay bundles like any other signed message.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Most readings one published bundle carries.
pub const MAX_READINGS: usize = 256;
/// Most block bytes one published bundle carries (well under gossipsub's 1 MiB message).
pub const MAX_BYTES: usize = 64 * 1024;
/// Most readings accepted in a received bundle (a bound on one message's work).
pub const MAX_RECEIVED: usize = 4096;

/// The wire form.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bundle {
    readings: Vec<ByteBuf>,
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BundleError {
    /// Not the bundle map.
    #[error("not a DAG-CBOR bundle of readings: {0}")]
    Decode(String),
    /// No readings, or more than [`MAX_RECEIVED`].
    #[error("a bundle carries 1 to {MAX_RECEIVED} readings, this one {0}")]
    Count(usize),
}

/// Whether the bytes are meant as a bundle: a CBOR map of one entry whose key is "readings".
pub fn looks_like_bundle(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\xa1\x68readings")
}

/// Encodes blocks (reading block bytes) as one bundle.
pub fn encode<B: AsRef<[u8]>>(blocks: &[B]) -> Vec<u8> {
    let bundle = Bundle {
        readings: blocks
            .iter()
            .map(|b| ByteBuf::from(b.as_ref().to_vec()))
            .collect(),
    };
    // A map of byte strings always serializes.
    serde_ipld_dagcbor::to_vec(&bundle).expect("a bundle always serializes")
}

/// Decodes a bundle into its blocks (each still to be decoded and checked as a reading).
pub fn decode(bytes: &[u8]) -> Result<Vec<Vec<u8>>, BundleError> {
    let bundle: Bundle =
        serde_ipld_dagcbor::from_slice(bytes).map_err(|e| BundleError::Decode(e.to_string()))?;
    let n = bundle.readings.len();
    if n == 0 || n > MAX_RECEIVED {
        return Err(BundleError::Count(n));
    }
    Ok(bundle.readings.into_iter().map(ByteBuf::into_vec).collect())
}

/// The gossip payloads for readings of one topic, in order: runs of up to [`MAX_READINGS`]
/// readings and [`MAX_BYTES`] as bundles, a run of one as the reading block itself.
pub fn pack(blocks: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut run: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0;
    let close = |run: &mut Vec<Vec<u8>>, out: &mut Vec<Vec<u8>>| match run.len() {
        0 => {}
        1 => out.push(run.pop().expect("one block")),
        _ => out.push(encode(&std::mem::take(run))),
    };
    for block in blocks {
        if !run.is_empty() && (run.len() == MAX_READINGS || bytes + block.len() > MAX_BYTES) {
            close(&mut run, &mut out);
            bytes = 0;
        }
        bytes += block.len();
        run.push(block);
    }
    close(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{looks_like_reading, Reading};

    fn block(seq: u64) -> Vec<u8> {
        Reading {
            aqi: None,
            seq,
            prev: None,
            joins: Vec::new(),
            time: 1_764_000_000_000 + seq,
            unit: "°C".into(),
            topic: "temperature".into(),
            value: 21.5,
            source: "s1".into(),
        }
        .encode()
        .1
    }

    #[test]
    fn a_bundle_carries_the_blocks_byte_for_byte() {
        let blocks: Vec<Vec<u8>> = (1..=3).map(block).collect();
        let wire = encode(&blocks);
        assert!(looks_like_bundle(&wire));
        assert!(!looks_like_reading(&wire));
        assert!(!looks_like_bundle(&blocks[0]));
        assert_eq!(decode(&wire).unwrap(), blocks);
        // Canonical DAG-CBOR: re-encoding through the generic IPLD model gives the same bytes.
        let ipld: ipld_core::ipld::Ipld = serde_ipld_dagcbor::from_slice(&wire).unwrap();
        assert_eq!(serde_ipld_dagcbor::to_vec(&ipld).unwrap(), wire);
    }

    #[test]
    fn empty_oversized_and_foreign_bundles_are_refused() {
        let none: Vec<Vec<u8>> = Vec::new();
        assert_eq!(decode(&encode(&none)), Err(BundleError::Count(0)));
        let many: Vec<Vec<u8>> = vec![vec![0u8]; MAX_RECEIVED + 1];
        assert_eq!(
            decode(&encode(&many)),
            Err(BundleError::Count(MAX_RECEIVED + 1))
        );
        assert!(matches!(
            decode(b"\xa1\x68readings\x01"),
            Err(BundleError::Decode(_))
        ));
        // An extra key is not a bundle.
        let mut extra = encode(&[block(1)]);
        extra[0] = 0xa2;
        extra.extend_from_slice(b"\x61x\x01");
        assert!(matches!(decode(&extra), Err(BundleError::Decode(_))));
    }

    #[test]
    fn packing_keeps_order_sends_a_lone_reading_as_itself_and_bounds_each_bundle() {
        assert!(pack(Vec::new()).is_empty());
        let one = block(1);
        assert_eq!(pack(vec![one.clone()]), vec![one]);
        let blocks: Vec<Vec<u8>> = (1..=(2 * MAX_READINGS as u64 + 1)).map(block).collect();
        let packed = pack(blocks.clone());
        // Two full bundles, then the last reading alone.
        assert_eq!(packed.len(), 3);
        assert_eq!(decode(&packed[0]).unwrap(), blocks[..MAX_READINGS]);
        assert_eq!(
            decode(&packed[1]).unwrap(),
            blocks[MAX_READINGS..2 * MAX_READINGS]
        );
        assert_eq!(packed[2], blocks[2 * MAX_READINGS]);
        // The byte bound: large blocks close a bundle before MAX_BYTES.
        let big: Vec<Vec<u8>> = (0..10).map(|_| vec![7u8; MAX_BYTES / 4]).collect();
        let packed = pack(big.clone());
        assert!(packed.iter().all(|p| p.len() <= MAX_BYTES + 64));
        let back: Vec<Vec<u8>> = packed.iter().flat_map(|p| decode(p).unwrap()).collect();
        assert_eq!(back, big);
    }
}
