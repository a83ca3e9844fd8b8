//! `clip dedup`: groups of near-duplicate images in an index — every pair whose cosine is at least
//! the threshold is linked (blocked matrix products, so memory stays `block × n`), and the
//! connected components of two or more images are the groups. The default threshold, 0.94, is
//! clip-retrieval's; `clip eval overlap` calibrates one on a labelled set.
//!
//! For large collections [`groups_by_neighbours`] links each image only to its nearest
//! neighbours from an approximate index ([`NEIGHBOURS`] of them): `n·k` distance checks instead of
//! `n²`, at the cost of links the graph misses (its recall) and of groups where one image has more
//! than `k` near-duplicates (they are still joined through chains).

use crate::search::Matrix;

/// clip-retrieval's near-duplicate threshold.
pub const DEFAULT_THRESHOLD: f32 = 0.94;

/// A group of near-duplicates: row indices into the matrix (ascending), and the lowest cosine of
/// the links that joined it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Group {
    pub members: Vec<usize>,
    pub min_link: f32,
}

fn find(parent: &mut [usize], mut x: usize) -> usize {
    while parent[x] != x {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    x
}

/// Neighbours asked of the approximate index per image.
pub const NEIGHBOURS: usize = 32;

/// Above this many images `clip dedup` goes through the approximate index when there is one.
pub const ANN_ABOVE: usize = 20_000;

/// Groups of `m`'s rows linked by cosine ≥ `threshold`, from each row's nearest neighbours as
/// `neighbours(row vector)` gives them (ids and cosines, e.g. from an approximate index).
pub fn groups_by_neighbours<E>(
    m: &Matrix,
    threshold: f32,
    mut neighbours: impl FnMut(&[f32]) -> Result<Vec<(i64, f32)>, E>,
) -> Result<Vec<Group>, E> {
    let row_of: std::collections::HashMap<i64, usize> =
        m.ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
    let n = m.len();
    let mut parent: Vec<usize> = (0..n).collect();
    let mut min_link = vec![f32::INFINITY; n];
    for a in 0..n {
        for (id, c) in neighbours(&m.row(a))? {
            let Some(&b) = row_of.get(&id) else { continue };
            if b == a || c < threshold {
                continue;
            }
            link(&mut parent, &mut min_link, a, b, c);
        }
    }
    Ok(collect(&mut parent, &min_link))
}

fn link(parent: &mut [usize], min_link: &mut [f32], a: usize, b: usize, c: f32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    let low = min_link[ra].min(min_link[rb]).min(c);
    if ra != rb {
        parent[rb] = ra;
    }
    min_link[ra] = low;
}

/// Groups of `m`'s rows linked by cosine ≥ `threshold`, largest first (then by first member).
pub fn groups(m: &Matrix, threshold: f32) -> Vec<Group> {
    let n = m.len();
    let mut parent: Vec<usize> = (0..n).collect();
    let mut min_link = vec![f32::INFINITY; n];
    const BLOCK: usize = 1024;
    for start in (0..n).step_by(BLOCK) {
        let rows = BLOCK.min(n - start);
        let s = m.scores(&m.rows(start, rows)); // [rows, n]
        for i in 0..rows {
            let a = start + i;
            for (b, &c) in s[i * n..(i + 1) * n].iter().enumerate().skip(a + 1) {
                if c >= threshold {
                    link(&mut parent, &mut min_link, a, b, c);
                }
            }
        }
    }
    collect(&mut parent, &min_link)
}

/// The connected components of two or more rows, largest first (then by first member).
fn collect(parent: &mut [usize], min_link: &[f32]) -> Vec<Group> {
    let n = parent.len();
    let mut by_root: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for i in 0..n {
        let r = find(parent, i);
        by_root.entry(r).or_default().push(i);
    }
    let mut out: Vec<Group> = by_root
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(r, members)| Group {
            min_link: min_link[r],
            members,
        })
        .collect();
    out.sort_by(|a, b| {
        b.members
            .len()
            .cmp(&a.members.len())
            .then(a.members[0].cmp(&b.members[0]))
    });
    out
}

/// One member of a group, for printing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DedupRow {
    pub group: usize,
    pub id: i64,
    pub path: String,
    /// cosine to the group's first member (1 for the first)
    pub cosine_to_first: f32,
}

/// The members of `groups` as rows, group by group.
pub fn rows(m: &Matrix, groups: &[Group]) -> Vec<DedupRow> {
    let mut out = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let first = m.row(group.members[0]);
        for &i in &group.members {
            let v = m.row(i);
            out.push(DedupRow {
                group: g,
                id: m.ids[i],
                path: m.paths[i].clone(),
                cosine_to_first: v.iter().zip(&first).map(|(a, b)| a * b).sum(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn links_are_transitive_and_thresholded() {
        // a ≈ b ≈ c (chain), d alone, e = f exactly
        let rows = [
            unit(&[1.0, 0.0, 0.0]),
            unit(&[1.0, 0.25, 0.0]),
            unit(&[1.0, 0.5, 0.0]),
            unit(&[0.0, 0.0, 1.0]),
            unit(&[0.0, 1.0, 1.0]),
            unit(&[0.0, 1.0, 1.0]),
        ];
        let m = Matrix::from_rows(
            (0..6).collect(),
            (0..6).map(|i| i.to_string()).collect(),
            &rows.concat(),
            3,
        );
        let g = groups(&m, 0.96);
        assert_eq!(g.len(), 2, "{g:?}");
        assert_eq!(g[0].members, vec![0, 1, 2]);
        assert_eq!(g[1].members, vec![4, 5]);
        assert!((g[1].min_link - 1.0).abs() < 1e-6);
        assert!(g[0].min_link >= 0.96 && g[0].min_link < 0.99);
        // above every link: no group
        assert!(groups(&m, 1.01).is_empty());
    }
}
