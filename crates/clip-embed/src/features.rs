//! Embeddings with a label per row: what the pipeline hands to the evaluation protocols.

/// Features `[n, dim]` row-major with a label per row.
#[derive(Debug, Clone, Default)]
pub struct Features {
    pub dim: usize,
    pub data: Vec<f32>,
    pub labels: Vec<usize>,
}

impl Features {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The rows `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> Features {
        Features {
            dim: self.dim,
            data: idx
                .iter()
                .flat_map(|&i| self.row(i).iter().copied())
                .collect(),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
        }
    }

    /// These rows followed by `other`'s.
    pub fn concat(&self, other: &Features) -> Features {
        let mut f = self.clone();
        f.data.extend_from_slice(&other.data);
        f.labels.extend_from_slice(&other.labels);
        f
    }
}
