//! Server-to-client text frames written straight to the socket.
//!
//! tungstenite copies every outgoing payload into its own write buffer, one
//! per connection. For a room with many subscribers that copy, into a buffer
//! no longer in cache, was the largest single cost of a node (27 % at 300
//! subscribers per room; BENCHMARKS.md). Here a frame of one queued item (a
//! message, or a room's run already joined for batched clients) goes out as
//! a header and the item's own bytes, shared by every subscriber's queue;
//! several small items of a batched frame are joined once, with the header,
//! into a fresh buffer (still in cache when the kernel copies it: handing
//! the kernel every message as its own slice instead cost as much in its
//! copy loop). Everything queued goes out in one vectored write.
//!
//! A server frame (RFC 6455, section 5.2) is not masked: FIN and the text
//! opcode, the payload length (7 bits, or 126 and 16 bits, or 127 and 64
//! bits), then the payload. Control frames (pong, close) still go through
//! tungstenite; the session writes its buffer out before raw frames, so
//! frames never interleave.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use hubbub_backplane::Text;
use hubbub_proto::client::BATCH_SEPARATOR;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// At most this many slices per `writev` (Linux's `IOV_MAX`).
const MAX_SLICES: usize = 1024;
/// FIN set, opcode 1 (text).
const FIN_TEXT: u8 = 0x81;

/// One piece of the bytes to write.
enum Segment {
    /// A frame header: the bytes and how many of them are used.
    Header([u8; 10], u8),
    /// A lone message, the whole payload of its frame.
    Text(Text),
    /// A whole frame: header and joined messages.
    Frame(Vec<u8>),
}

impl Segment {
    fn bytes(&self) -> &[u8] {
        match self {
            Segment::Header(bytes, len) => &bytes[..usize::from(*len)],
            Segment::Text(text) => text.as_bytes(),
            Segment::Frame(bytes) => bytes,
        }
    }
}

/// The header of an unmasked, final text frame of `len` payload bytes: the
/// bytes and how many of them are used.
fn header(len: usize) -> ([u8; 10], u8) {
    let mut bytes = [0u8; 10];
    bytes[0] = FIN_TEXT;
    let used = if len < 126 {
        bytes[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        bytes[1] = 126;
        bytes[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        bytes[1] = 127;
        bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (bytes, used)
}

/// Frames queued for one connection and not yet written. Progress is kept
/// here, not in the future that writes, so a write interrupted by a close
/// request leaves whole frames to finish before the close frame.
#[derive(Default)]
pub(crate) struct FrameWriter {
    segments: VecDeque<Segment>,
    /// Bytes of the front segment already written.
    offset: usize,
}

impl FrameWriter {
    /// Queues one text frame whose payload is `texts` joined one per line
    /// (one text: the text itself). Returns the bytes of the texts.
    pub(crate) fn frame(&mut self, texts: &[Text]) -> usize {
        let bytes: usize = texts.iter().map(|text| text.len()).sum();
        match texts {
            [] => {}
            [text] => {
                let (header, used) = header(bytes);
                self.segments.push_back(Segment::Header(header, used));
                self.segments.push_back(Segment::Text(text.clone()));
            }
            _ => {
                let len = bytes + texts.len() - 1;
                let (header, used) = header(len);
                let mut frame = Vec::with_capacity(usize::from(used) + len);
                frame.extend_from_slice(&header[..usize::from(used)]);
                for (i, text) in texts.iter().enumerate() {
                    if i > 0 {
                        frame.push(BATCH_SEPARATOR as u8);
                    }
                    frame.extend_from_slice(text.as_bytes());
                }
                self.segments.push_back(Segment::Frame(frame));
            }
        }
        bytes
    }

    /// Writes everything queued, then flushes `io`.
    pub(crate) async fn write_to<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> io::Result<()> {
        while !self.segments.is_empty() {
            let written = {
                let slices: Vec<IoSlice<'_>> = self
                    .segments
                    .iter()
                    .take(MAX_SLICES)
                    .enumerate()
                    .map(|(i, segment)| {
                        let bytes = segment.bytes();
                        IoSlice::new(if i == 0 { &bytes[self.offset..] } else { bytes })
                    })
                    .collect();
                io.write_vectored(&slices).await?
            };
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.advance(written);
        }
        io.flush().await
    }

    /// Drops the first `n` bytes of what is queued, and any empty segment
    /// they leave at the front (a write of nothing but empty slices would
    /// return 0 and read as a closed socket).
    fn advance(&mut self, mut n: usize) {
        while let Some(front) = self.segments.front() {
            let left = front.bytes().len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.offset = 0;
            self.segments.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

    /// A writer that takes at most `step` bytes per call, to exercise
    /// partial writes.
    struct Trickle<W> {
        inner: W,
        step: usize,
    }

    impl<W: AsyncWrite + Unpin> AsyncWrite for Trickle<W> {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let step = self.step.min(buf.len());
            Pin::new(&mut self.inner).poll_write(cx, &buf[..step])
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// Writes `frames` through a writer that takes `step` bytes at a time
    /// and reads them back with tungstenite as a client.
    async fn round_trip(frames: &[Vec<String>], step: usize) -> Vec<String> {
        let (server, client) = tokio::io::duplex(1 << 20);
        let mut writer = FrameWriter::default();
        for texts in frames {
            let texts: Vec<Text> = texts.iter().map(|t| Text::from(t.clone())).collect();
            writer.frame(&texts);
        }
        let mut io = Trickle { inner: server, step };
        let write = async move {
            writer.write_to(&mut io).await.expect("written");
            assert!(writer.segments.is_empty());
            io
        };
        let config = WebSocketConfig::default().max_message_size(None).max_frame_size(None);
        let read = async {
            let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, Some(config)).await;
            let mut got = Vec::new();
            for _ in frames {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => got.push(text.as_str().to_owned()),
                    other => panic!("expected a text frame, got {other:?}"),
                }
            }
            got
        };
        let (_io, got) = tokio::join!(write, read);
        got
    }

    #[tokio::test]
    async fn frames_of_every_length_class_read_back_as_sent() {
        // 7-bit, 16-bit and 64-bit lengths, at and around each boundary.
        let lens = [0, 1, 125, 126, 127, 65_535, 65_536, 200_000];
        let frames: Vec<Vec<String>> = lens.iter().map(|&n| vec!["é".repeat(n / 2) + &"x".repeat(n % 2)]).collect();
        let got = round_trip(&frames, usize::MAX).await;
        let want: Vec<String> = frames.iter().map(|f| f[0].clone()).collect();
        assert_eq!(got, want);
        // An empty frame last: nothing but a header, and the write ends.
        assert_eq!(round_trip(&[vec![String::new()]], usize::MAX).await, [""]);
    }

    #[tokio::test]
    async fn a_batched_frame_is_its_messages_one_per_line_even_written_a_few_bytes_at_a_time() {
        let frames = vec![
            vec![r#"{"a":1}"#.to_owned(), r#"{"b":2}"#.to_owned(), r#"{"c":3}"#.to_owned()],
            vec!["{}".to_owned()],
            vec!["x".repeat(300), "y".repeat(70_000)],
        ];
        let got = round_trip(&frames, 7).await;
        assert_eq!(got[0], "{\"a\":1}\n{\"b\":2}\n{\"c\":3}");
        assert_eq!(got[1], "{}");
        assert_eq!(got[2], format!("{}\n{}", "x".repeat(300), "y".repeat(70_000)));
    }

    #[test]
    fn a_frame_counts_the_bytes_of_its_texts_without_separators_or_headers() {
        let mut writer = FrameWriter::default();
        let texts = [r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#].map(Text::from);
        assert_eq!(writer.frame(&texts), 21);
        assert_eq!(writer.frame(&[]), 0, "no texts, no frame");
        assert_eq!(writer.frame(&texts[..1]), 7);
        assert_eq!(writer.segments.len(), 3, "a joined frame, then a header and a lone text");
    }

    #[tokio::test]
    async fn more_slices_than_one_writev_takes_go_out_in_order() {
        // 2,000 one-message frames: 4,000 slices, several writes.
        let frames: Vec<Vec<String>> = (0..2_000).map(|i| vec![format!("{{\"i\":{i}}}")]).collect();
        let got = round_trip(&frames, usize::MAX).await;
        assert_eq!(got, frames.into_iter().map(|mut f| f.remove(0)).collect::<Vec<_>>());
    }
}
