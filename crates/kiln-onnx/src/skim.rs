//! Reading a model file without reading its large tensors twice: [`skim`] copies the file's
//! protobuf into a *skeleton* that leaves out the bytes of every large `raw_data` field of
//! the tensors the importer reads (graph initializers, `Constant` values), and notes where in
//! the file each of them lies. The importer decodes the skeleton (kilobytes for a model of
//! tens of megabytes) and [`crate::tensor::Reader`] reads each noted range of the file
//! straight into the values it becomes, as it reads external data: one copy, no buffer of the
//! whole file.
//!
//! A left-out field is replaced by [`crate::proto::TensorProto::kiln_raw_data_at`], the index
//! of its range in [`Skim::ranges`]. The skeleton decodes exactly as the file would, with
//! those fields moved aside; anything the skim does not expect (a wire type protobuf has
//! deprecated, a length past its message's end, a tensor with two `raw_data` fields or with
//! that index field already set) makes it give up, and the caller reads and decodes the whole
//! file as before, with the same errors.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};

/// `raw_data` fields of at least this many bytes are left in the file; smaller ones are
/// copied into the skeleton (a read of their own would cost more than the copy).
pub const MIN_DEFERRED_BYTES: u64 = 4096;

/// A skimmed model file.
#[derive(Debug)]
pub struct Skim {
    /// The `ModelProto` without the left-out `raw_data` bytes.
    pub skeleton: Vec<u8>,
    /// `(offset, length)` in the file of each left-out `raw_data` field.
    pub ranges: Vec<(u64, u64)>,
}

/// The messages on the way from a `ModelProto` to the tensors the importer reads.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Model,
    Graph,
    Node,
    Attribute,
    Tensor,
}

impl Kind {
    /// The message a length-delimited field holds, when the skim looks inside it.
    fn child(self, field: u64) -> Option<Kind> {
        match (self, field) {
            (Kind::Model, 7) => Some(Kind::Graph),           // ModelProto.graph
            (Kind::Graph, 1) => Some(Kind::Node),            // GraphProto.node
            (Kind::Graph, 5) => Some(Kind::Tensor),          // GraphProto.initializer
            (Kind::Node, 5) => Some(Kind::Attribute),        // NodeProto.attribute
            (Kind::Attribute, 5 | 10) => Some(Kind::Tensor), // AttributeProto.t, .tensors
            _ => None,
        }
    }
}

/// `TensorProto.raw_data`.
const RAW_DATA: u64 = 9;

/// Skims the model file `file` of `len` bytes (read from its start); `None` when the file is
/// not shaped as the skim expects, or cannot be read (the caller then reads it whole, and
/// reports what is wrong).
pub fn skim(file: &File, len: u64) -> Option<Skim> {
    let mut s = Scanner {
        src: BufReader::with_capacity(1 << 16, file),
        pos: 0,
        ranges: Vec::new(),
    };
    s.src.rewind().ok()?;
    let mut skeleton = Vec::new();
    s.message(Kind::Model, len, &mut skeleton)?;
    Some(Skim {
        skeleton,
        ranges: s.ranges,
    })
}

struct Scanner<'f> {
    src: BufReader<&'f File>,
    /// The offset in the file of the next byte `src` returns.
    pos: u64,
    ranges: Vec<(u64, u64)>,
}

impl Scanner<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.src.fill_buf().ok()?.first()?;
        self.src.consume(1);
        self.pos += 1;
        Some(b)
    }

    /// A varint, also appended to `out` as read.
    fn varint(&mut self, out: &mut Vec<u8>) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte()?;
            out.push(b);
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// `n` bytes appended to `out`.
    fn copy(&mut self, n: u64, out: &mut Vec<u8>) -> Option<()> {
        let start = out.len();
        out.resize(start + usize::try_from(n).ok()?, 0);
        self.src.read_exact(&mut out[start..]).ok()?;
        self.pos += n;
        Some(())
    }

    fn skip(&mut self, n: u64) -> Option<()> {
        self.src.seek_relative(i64::try_from(n).ok()?).ok()?;
        self.pos += n;
        Some(())
    }

    /// The fields of a `kind` message ending at offset `end`, copied to `out` (with the
    /// messages on the way to a tensor rewritten and large `raw_data` left out).
    fn message(&mut self, kind: Kind, end: u64, out: &mut Vec<u8>) -> Option<()> {
        let mut raw_data_seen = false;
        while self.pos < end {
            let mut key_bytes = Vec::with_capacity(2);
            let key = self.varint(&mut key_bytes)?;
            let (field, wire) = (key >> 3, key & 7);
            if kind == Kind::Tensor && field == crate::proto::KILN_RAW_DATA_AT {
                return None; // kiln's own field, in a file: read the file whole
            }
            match wire {
                0 => {
                    out.extend_from_slice(&key_bytes);
                    self.varint(out)?;
                }
                1 => {
                    out.extend_from_slice(&key_bytes);
                    self.copy(8, out)?;
                }
                5 => {
                    out.extend_from_slice(&key_bytes);
                    self.copy(4, out)?;
                }
                2 => {
                    let mut len_bytes = Vec::with_capacity(5);
                    let n = self.varint(&mut len_bytes)?;
                    if n > end.checked_sub(self.pos)? {
                        return None;
                    }
                    if kind == Kind::Tensor && field == RAW_DATA {
                        if raw_data_seen {
                            return None;
                        }
                        raw_data_seen = true;
                        if n >= MIN_DEFERRED_BYTES {
                            let index = self.ranges.len() as u64;
                            self.ranges.push((self.pos, n));
                            self.skip(n)?;
                            put_varint(out, crate::proto::KILN_RAW_DATA_AT << 3);
                            put_varint(out, index);
                            continue;
                        }
                    }
                    out.extend_from_slice(&key_bytes);
                    match kind.child(field) {
                        Some(child) => {
                            let mut inner = Vec::new();
                            self.message(child, self.pos + n, &mut inner)?;
                            put_varint(out, inner.len() as u64);
                            out.extend_from_slice(&inner);
                        }
                        None => {
                            out.extend_from_slice(&len_bytes);
                            self.copy(n, out)?;
                        }
                    }
                }
                _ => return None, // groups (deprecated) or invalid
            }
        }
        (self.pos == end).then_some(())
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{GraphProto, ModelProto, NodeProto, TensorProto, data_type};
    use prost::Message;

    fn tensor(name: &str, n: usize) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: vec![n as i64],
            data_type: data_type::FLOAT,
            raw_data: (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect(),
            ..TensorProto::default()
        }
    }

    fn file_of(bytes: &[u8], tag: &str) -> (File, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("kiln-skim-{tag}-{}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        (File::open(&path).unwrap(), path)
    }

    #[test]
    fn large_raw_data_is_left_in_the_file_and_the_rest_decodes_the_same() {
        let constant = NodeProto {
            op_type: "Constant".into(),
            output: vec!["c".into()],
            attribute: vec![crate::proto::AttributeProto {
                name: "value".into(),
                r#type: crate::proto::attribute_type::TENSOR,
                t: Some(tensor("c", 3000)),
                ..Default::default()
            }],
            ..Default::default()
        };
        let model = ModelProto {
            ir_version: 8,
            producer_name: "test".into(),
            graph: Some(GraphProto {
                name: "g".into(),
                node: vec![constant],
                initializer: vec![tensor("big", 2000), tensor("small", 10), tensor("big2", 1024)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = model.encode_to_vec();
        let (f, path) = file_of(&bytes, "ok");
        let s = skim(&f, bytes.len() as u64).unwrap();
        assert_eq!(s.ranges.len(), 3);
        assert!(s.skeleton.len() < 1000, "{} bytes", s.skeleton.len());
        let mut back = ModelProto::decode(&s.skeleton[..]).unwrap();
        // each left-out field is a range of the file holding exactly its bytes, and putting
        // them back gives the model
        let mut put_back = |t: &mut TensorProto| {
            if let Some(i) = t.kiln_raw_data_at.take() {
                let (off, len) = s.ranges[i as usize];
                t.raw_data = bytes[off as usize..(off + len) as usize].to_vec();
            }
        };
        let g = back.graph.as_mut().unwrap();
        g.initializer.iter_mut().for_each(&mut put_back);
        put_back(g.node[0].attribute[0].t.as_mut().unwrap());
        assert_eq!(back, model);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn unexpected_shapes_give_up() {
        let model = ModelProto {
            graph: Some(GraphProto {
                initializer: vec![tensor("big", 2000)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = model.encode_to_vec();
        // truncated: a length past the end
        let (f, path) = file_of(&bytes[..bytes.len() - 1], "cut");
        assert!(skim(&f, bytes.len() as u64 - 1).is_none());
        std::fs::remove_file(path).unwrap();
        // kiln's own field in a file
        let mut t = tensor("big", 2000);
        t.kiln_raw_data_at = Some(0);
        let own = ModelProto {
            graph: Some(GraphProto {
                initializer: vec![t],
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = own.encode_to_vec();
        let (f, path) = file_of(&bytes, "own");
        assert!(skim(&f, bytes.len() as u64).is_none());
        std::fs::remove_file(path).unwrap();
        // a group (wire type 3)
        let (f, path) = file_of(&[0x0b, 0x0c], "group");
        assert!(skim(&f, 2).is_none());
        std::fs::remove_file(path).unwrap();
    }
}
