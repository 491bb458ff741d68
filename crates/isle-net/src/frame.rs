//! The wire codec: length-prefixed, checksummed postcard frames. Pure, no IO.
//!
//! ```text
//! +------------+------------------------+--------------------------------+
//! | u32 BE len | u32 BE crc32c(payload) | payload: postcard(Envelope<M>) |
//! +------------+------------------------+--------------------------------+
//! ```
//!
//! The checksum covers the payload only. A flipped payload bit is caught and the frame skipped;
//! a length above the limit means the stream can no longer be trusted to resynchronise, so the
//! decoder refuses everything after it and the caller closes the connection.

use std::marker::PhantomData;

use isle_types::NodeId;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Version stamped into every envelope; a receiver skips envelopes of any other version.
pub const WIRE_VERSION: u16 = 1;
/// Bytes before the payload: length and checksum.
pub const HEADER_BYTES: usize = 8;
/// Default limit on a frame's payload length (16 MiB).
pub const MAX_FRAME_BYTES_DEFAULT: usize = 16 * 1024 * 1024;

/// What travels in one frame: the sender's id and one node message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Envelope<M> {
    /// Wire version, [`WIRE_VERSION`] for frames this build writes.
    pub version: u16,
    /// The node that sent the message.
    pub from: NodeId,
    /// The message itself.
    pub msg: M,
}

impl<M> Envelope<M> {
    /// An envelope of the current wire version.
    pub fn new(from: NodeId, msg: M) -> Self {
        Envelope {
            version: WIRE_VERSION,
            from,
            msg,
        }
    }
}

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The message did not serialise; a bug in the message type, not in the network.
    #[error("could not encode message: {0} (check the message type's Serialize impl)")]
    Encode(String),
    /// The length prefix exceeds the limit; the stream cannot be resynchronised.
    #[error(
        "frame of {len} bytes exceeds the {max}-byte limit: close the connection \
         (raise max_frame_bytes on both ends if messages this large are expected)"
    )]
    TooLarge {
        /// Payload length claimed by the prefix (or produced by the encoder).
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// The payload does not match its checksum; the frame was skipped.
    #[error(
        "frame checksum mismatch (header {expected:#010x}, payload {actual:#010x}): frame skipped; \
         repeated mismatches point at a faulty link or NIC"
    )]
    Corrupt {
        /// Checksum in the header.
        expected: u32,
        /// Checksum of the bytes received.
        actual: u32,
    },
    /// The checksum held but the payload did not decode; the frame was skipped.
    #[error(
        "frame did not decode ({0}): frame skipped; the peer probably runs an incompatible \
         Isle version"
    )]
    Undecodable(String),
}

/// Encodes one envelope as a frame, refusing payloads longer than `u32::MAX`.
pub fn encode<M: Serialize>(envelope: &Envelope<M>) -> Result<Vec<u8>, FrameError> {
    encode_limited(envelope, u32::MAX as usize)
}

/// Encodes one envelope as a frame, refusing payloads longer than `max_frame_bytes`.
pub fn encode_limited<M: Serialize>(
    envelope: &Envelope<M>,
    max_frame_bytes: usize,
) -> Result<Vec<u8>, FrameError> {
    // Serialise straight after a placeholder header: one allocation per frame.
    let mut frame = postcard::to_extend(envelope, vec![0u8; HEADER_BYTES])
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = frame.len() - HEADER_BYTES;
    let max = max_frame_bytes.min(u32::MAX as usize);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let crc = crc32c::crc32c(&frame[HEADER_BYTES..]);
    frame[0..4].copy_from_slice(&(len as u32).to_be_bytes());
    frame[4..8].copy_from_slice(&crc.to_be_bytes());
    Ok(frame)
}

/// An incremental decoder: push bytes as they arrive, pull envelopes out.
///
/// Its buffer never holds more than one partial frame beyond what the caller has not pulled, so
/// it is bounded by `max_frame_bytes + HEADER_BYTES` plus the last push.
#[derive(Debug)]
pub struct FrameDecoder<M> {
    buffer: Vec<u8>,
    /// Start of the undecoded bytes in `buffer`; compacted lazily to keep pushes amortised O(1).
    start: usize,
    max_frame_bytes: usize,
    /// Set once an oversized prefix is seen: nothing after it can be framed reliably.
    poisoned: Option<(usize, usize)>,
    _msg: PhantomData<fn() -> M>,
}

impl<M: DeserializeOwned> FrameDecoder<M> {
    /// A decoder refusing frames whose payload exceeds `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameDecoder {
            buffer: Vec::new(),
            start: 0,
            max_frame_bytes,
            poisoned: None,
            _msg: PhantomData,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buffer.len() / 2 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// Bytes pushed but not yet consumed by [`FrameDecoder::next_frame`].
    pub fn buffered(&self) -> usize {
        self.buffer.len() - self.start
    }

    /// The next complete frame: `Ok(None)` when more bytes are needed.
    ///
    /// `Corrupt` and `Undecodable` consume the bad frame, so calling again continues with the
    /// next one. `TooLarge` is sticky: every later call returns it again.
    pub fn next_frame(&mut self) -> Result<Option<Envelope<M>>, FrameError> {
        if let Some((len, max)) = self.poisoned {
            return Err(FrameError::TooLarge { len, max });
        }
        let available = &self.buffer[self.start..];
        if available.len() < HEADER_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes([available[0], available[1], available[2], available[3]]);
        let len = len as usize;
        if len > self.max_frame_bytes {
            self.poisoned = Some((len, self.max_frame_bytes));
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_bytes,
            });
        }
        if available.len() < HEADER_BYTES + len {
            return Ok(None);
        }
        let expected = u32::from_be_bytes([available[4], available[5], available[6], available[7]]);
        let payload = &available[HEADER_BYTES..HEADER_BYTES + len];
        let actual = crc32c::crc32c(payload);
        let decoded = if actual != expected {
            Err(FrameError::Corrupt { expected, actual })
        } else {
            decode_payload(payload)
        };
        self.start += HEADER_BYTES + len;
        decoded.map(Some)
    }
}

/// Flips payload bit `bit` of an encoded frame (fault injection); out-of-range bits do nothing.
pub(crate) fn flip_payload_bit(frame: &mut [u8], bit: u64) {
    let index = usize::try_from(bit / 8).map_or(usize::MAX, |i| i.saturating_add(HEADER_BYTES));
    if let Some(byte) = frame.get_mut(index) {
        *byte ^= 1 << (bit % 8);
    }
}

fn decode_payload<M: DeserializeOwned>(payload: &[u8]) -> Result<Envelope<M>, FrameError> {
    let (envelope, rest): (Envelope<M>, _) =
        postcard::take_from_bytes(payload).map_err(|e| FrameError::Undecodable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::Undecodable(format!(
            "{} trailing bytes after the envelope",
            rest.len()
        )));
    }
    if envelope.version != WIRE_VERSION {
        return Err(FrameError::Undecodable(format!(
            "wire version {} (this build speaks {WIRE_VERSION})",
            envelope.version
        )));
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Msg = Vec<u8>;

    fn envelope(msg: &[u8]) -> Envelope<Msg> {
        Envelope::new(NodeId(7), msg.to_vec())
    }

    fn decode_all(decoder: &mut FrameDecoder<Msg>) -> Vec<Result<Envelope<Msg>, FrameError>> {
        let mut out = Vec::new();
        loop {
            match decoder.next_frame() {
                Ok(None) => return out,
                Err(e @ FrameError::TooLarge { .. }) => {
                    out.push(Err(e));
                    return out;
                }
                other => out.push(other.map(|x| x.expect("Some checked above"))),
            }
        }
    }

    #[test]
    fn round_trip() {
        let env = envelope(b"hello");
        let frame = encode(&env).expect("encodes");
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(frame.len(), HEADER_BYTES + len);
        let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES_DEFAULT);
        decoder.push(&frame);
        assert_eq!(decoder.next_frame(), Ok(Some(env)));
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn every_single_bit_flip_in_payload_is_detected() {
        let env = envelope(b"the quick brown fox");
        let frame = encode(&env).expect("encodes");
        for bit in HEADER_BYTES * 8..frame.len() * 8 {
            let mut bad = frame.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let mut decoder = FrameDecoder::<Msg>::new(MAX_FRAME_BYTES_DEFAULT);
            decoder.push(&bad);
            decoder.push(&frame);
            let got = decode_all(&mut decoder);
            assert!(
                matches!(got[0], Err(FrameError::Corrupt { .. })),
                "bit {bit}: {got:?}"
            );
            // The stream continues with the next frame.
            assert_eq!(got[1], Ok(env.clone()), "bit {bit}");
            assert_eq!(got.len(), 2);
        }
    }

    #[test]
    fn truncated_input_waits_for_more_bytes() {
        let env = envelope(b"partial");
        let frame = encode(&env).expect("encodes");
        let mut decoder = FrameDecoder::new(MAX_FRAME_BYTES_DEFAULT);
        for byte in &frame[..frame.len() - 1] {
            decoder.push(std::slice::from_ref(byte));
            assert_eq!(decoder.next_frame(), Ok(None));
        }
        decoder.push(&frame[frame.len() - 1..]);
        assert_eq!(decoder.next_frame(), Ok(Some(env)));
    }

    #[test]
    fn oversized_prefix_is_sticky() {
        let mut decoder = FrameDecoder::<Msg>::new(100);
        decoder.push(&101u32.to_be_bytes());
        decoder.push(&[0; 4]);
        let expected = FrameError::TooLarge { len: 101, max: 100 };
        assert_eq!(decoder.next_frame(), Err(expected.clone()));
        decoder.push(&encode(&envelope(b"x")).expect("encodes"));
        assert_eq!(decoder.next_frame(), Err(expected));
    }

    #[test]
    fn encoder_refuses_oversized_messages() {
        let env = envelope(&[0u8; 200]);
        assert!(matches!(
            encode_limited(&env, 100),
            Err(FrameError::TooLarge { max: 100, .. })
        ));
    }

    #[test]
    fn garbage_with_valid_checksum_is_undecodable_and_skipped() {
        let cases: [&[u8]; 3] = [
            &[],                 // empty payload
            &[0xff, 0xff, 0xff], // varint overflow
            &[1, 7, 1, 0, 9],    // envelope then trailing byte
        ];
        let good = encode(&envelope(b"ok")).expect("encodes");
        for payload in cases {
            let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
            frame.extend_from_slice(payload);
            let mut decoder = FrameDecoder::<Msg>::new(MAX_FRAME_BYTES_DEFAULT);
            decoder.push(&frame);
            decoder.push(&good);
            let got = decode_all(&mut decoder);
            assert!(
                matches!(got[0], Err(FrameError::Undecodable(_))),
                "{payload:?}: {got:?}"
            );
            assert_eq!(got[1], Ok(envelope(b"ok")));
        }
    }

    #[test]
    fn other_wire_version_is_undecodable() {
        let env = Envelope {
            version: WIRE_VERSION + 1,
            from: NodeId(1),
            msg: vec![1u8],
        };
        let mut decoder = FrameDecoder::<Msg>::new(MAX_FRAME_BYTES_DEFAULT);
        decoder.push(&encode(&env).expect("encodes"));
        assert!(matches!(
            decoder.next_frame(),
            Err(FrameError::Undecodable(_))
        ));
    }

    proptest! {
        #[test]
        fn random_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut decoder = FrameDecoder::<Msg>::new(1024);
            decoder.push(&bytes);
            // Whatever comes out, the decoder terminates and never over-consumes.
            let _ = decode_all(&mut decoder);
            prop_assert!(decoder.buffered() <= bytes.len());
        }

        #[test]
        fn decode_of_encode_is_identity_across_any_chunking(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8),
            cuts in proptest::collection::vec(1usize..64, 1..64),
        ) {
            let envelopes: Vec<Envelope<Msg>> = payloads.iter().map(|p| envelope(p)).collect();
            let mut stream = Vec::new();
            for env in &envelopes {
                stream.extend(encode(env).expect("encodes"));
            }
            let mut decoder = FrameDecoder::<Msg>::new(MAX_FRAME_BYTES_DEFAULT);
            let mut got = Vec::new();
            let mut rest = &stream[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().expect("cycle of non-empty")).min(rest.len());
                decoder.push(&rest[..n]);
                rest = &rest[n..];
                while let Some(env) = decoder.next_frame().expect("valid stream") {
                    got.push(env);
                }
            }
            prop_assert_eq!(got, envelopes);
        }
    }
}
