//! How vectors are stored: f16 (the default) or f32, encoded as little-endian bytes.

/// How vectors are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F16,
    F32,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F16 => "f16",
            Dtype::F32 => "f32",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Dtype> {
        match s {
            "f16" => Some(Dtype::F16),
            "f32" => Some(Dtype::F32),
            _ => None,
        }
    }

    /// Little-endian bytes of `v`.
    pub fn encode(self, v: &[f32]) -> Vec<u8> {
        match self {
            Dtype::F16 => v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                .collect(),
            Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// The vector in `bytes`, appended to `out`; `None` when the length is not `dim` values.
    pub fn decode_into(self, bytes: &[u8], dim: usize, out: &mut Vec<f32>) -> Option<()> {
        match self {
            Dtype::F16 if bytes.len() == 2 * dim => {
                out.extend(
                    bytes
                        .chunks_exact(2)
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
                );
                Some(())
            }
            Dtype::F32 if bytes.len() == 4 * dim => {
                out.extend(
                    bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                );
                Some(())
            }
            _ => None,
        }
    }
}
