//! The real-coded genetic algorithm CLIP-GLaSS configures (pymoo's operators, bounds [0, 1]):
//! SBX crossover, polynomial mutation, binary tournament, elitist (μ + λ) survival, and NSGA-II's
//! non-dominated sorting with crowding distance when there are two objectives.

use clip_data::rng::Rng;

use crate::genome::{GENES, Genome};

/// SBX crossover of two parents (Deb & Agrawal; bounds [0, 1]).
pub fn sbx(a: &Genome, b: &Genome, eta: f32, rng: &mut Rng) -> (Genome, Genome) {
    let (mut c1, mut c2) = (*a, *b);
    for i in 0..GENES {
        if rng.unit() > 0.5 || (a[i] - b[i]).abs() < 1e-14 {
            continue;
        }
        let (y1, y2) = (a[i].min(b[i]), a[i].max(b[i]));
        let u = rng.unit() as f32;
        let child = |beta: f32| {
            let alpha = 2.0 - beta.powf(-(eta + 1.0));
            if u <= 1.0 / alpha {
                (u * alpha).powf(1.0 / (eta + 1.0))
            } else {
                (1.0 / (2.0 - u * alpha)).powf(1.0 / (eta + 1.0))
            }
        };
        let bq1 = child(1.0 + 2.0 * y1 / (y2 - y1));
        let bq2 = child(1.0 + 2.0 * (1.0 - y2) / (y2 - y1));
        let x1 = (0.5 * ((y1 + y2) - bq1 * (y2 - y1))).clamp(0.0, 1.0);
        let x2 = (0.5 * ((y1 + y2) + bq2 * (y2 - y1))).clamp(0.0, 1.0);
        if rng.unit() < 0.5 {
            (c1[i], c2[i]) = (x2, x1);
        } else {
            (c1[i], c2[i]) = (x1, x2);
        }
    }
    (c1, c2)
}

/// Polynomial mutation (Deb; bounds [0, 1]), each gene with probability `p`.
pub fn mutate(g: &mut Genome, p: f64, eta: f32, rng: &mut Rng) {
    for y in g.iter_mut() {
        if rng.unit() >= p {
            continue;
        }
        let u = rng.unit() as f32;
        let pow = 1.0 / (eta + 1.0);
        let dq = if u < 0.5 {
            let xy = 1.0 - *y;
            (2.0 * u + (1.0 - 2.0 * u) * xy.powf(eta + 1.0)).powf(pow) - 1.0
        } else {
            let xy = *y;
            1.0 - (2.0 * (1.0 - u) + 2.0 * (u - 0.5) * xy.powf(eta + 1.0)).powf(pow)
        };
        *y = (*y + dq).clamp(0.0, 1.0);
    }
}

pub(crate) fn random_genome(rng: &mut Rng) -> Genome {
    let mut g = [0f32; GENES];
    g.iter_mut().for_each(|x| *x = rng.unit() as f32);
    g
}

/// Fronts of non-dominated sorting (maximising every objective).
pub fn fronts(obj: &[Vec<f32>]) -> Vec<Vec<usize>> {
    let n = obj.len();
    let dominates = |a: &[f32], b: &[f32]| {
        a.iter().zip(b).all(|(x, y)| x >= y) && a.iter().zip(b).any(|(x, y)| x > y)
    };
    let mut dominated_by = vec![0usize; n];
    let mut dominates_list = vec![Vec::new(); n];
    for i in 0..n {
        for j in 0..n {
            if i != j && dominates(&obj[i], &obj[j]) {
                dominates_list[i].push(j);
            } else if i != j && dominates(&obj[j], &obj[i]) {
                dominated_by[i] += 1;
            }
        }
    }
    let mut out = Vec::new();
    let mut current: Vec<usize> = (0..n).filter(|&i| dominated_by[i] == 0).collect();
    while !current.is_empty() {
        let mut next = Vec::new();
        for &i in &current {
            for &j in &dominates_list[i] {
                dominated_by[j] -= 1;
                if dominated_by[j] == 0 {
                    next.push(j);
                }
            }
        }
        out.push(current);
        current = next;
    }
    out
}

/// Crowding distance of each member of `front`.
// `m` picks the objective inside every member's row, not an element of one slice
#[allow(clippy::needless_range_loop)]
pub fn crowding(obj: &[Vec<f32>], front: &[usize]) -> Vec<f32> {
    let mut d = vec![0f32; front.len()];
    if front.len() <= 2 {
        return vec![f32::INFINITY; front.len()];
    }
    let objectives = obj[front[0]].len();
    for m in 0..objectives {
        let v = |k: usize| obj[front[k]][m];
        let mut order: Vec<usize> = (0..front.len()).collect();
        order.sort_by(|&a, &b| v(a).total_cmp(&v(b)));
        let (lo, hi) = (v(order[0]), v(order[front.len() - 1]));
        d[order[0]] = f32::INFINITY;
        d[order[front.len() - 1]] = f32::INFINITY;
        if hi > lo {
            for k in 1..front.len() - 1 {
                d[order[k]] += (v(order[k + 1]) - v(order[k - 1])) / (hi - lo);
            }
        }
    }
    d
}

/// Survivors' indices: the best `keep` by fitness (one objective), or NSGA-II's fronts and
/// crowding (two).
pub(crate) fn survive(obj: &[Vec<f32>], keep: usize) -> Vec<usize> {
    if obj.first().is_none_or(|o| o.len() == 1) {
        let mut idx: Vec<usize> = (0..obj.len()).collect();
        idx.sort_by(|&a, &b| obj[b][0].total_cmp(&obj[a][0]));
        idx.truncate(keep);
        return idx;
    }
    let mut out = Vec::new();
    for f in fronts(obj) {
        if out.len() + f.len() <= keep {
            out.extend(f);
        } else {
            let d = crowding(obj, &f);
            let mut order: Vec<usize> = (0..f.len()).collect();
            order.sort_by(|&a, &b| d[b].total_cmp(&d[a]));
            out.extend(order.into_iter().take(keep - out.len()).map(|k| f[k]));
            break;
        }
    }
    out
}

/// Binary tournament: the better of two random members (lower front, then larger crowding, for
/// NSGA-II; higher fitness otherwise).
pub(crate) fn tournament(rank: &[(usize, f32)], rng: &mut Rng) -> usize {
    let (a, b) = (rng.below(rank.len()), rng.below(rank.len()));
    let better = |x: usize, y: usize| {
        rank[x].0 < rank[y].0 || (rank[x].0 == rank[y].0 && rank[x].1 > rank[y].1)
    };
    if better(b, a) { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbx_and_mutation_stay_in_bounds_and_move_genes() {
        let mut rng = Rng::new(0);
        let (a, b) = ([0.1f32; GENES], [0.9f32; GENES]);
        let (c1, c2) = sbx(&a, &b, 3.0, &mut rng);
        assert!(c1.iter().chain(&c2).all(|x| (0.0..=1.0).contains(x)));
        assert!(c1 != a || c2 != b, "some genes cross");
        // the mean of the two children stays the parents' mean (SBX is symmetric)
        for i in 0..GENES {
            assert!(
                ((c1[i] + c2[i]) - 1.0).abs() < 1e-4
                    || c1[i] == 0.0
                    || c2[i] == 1.0
                    || c1[i] == 1.0
                    || c2[i] == 0.0,
                "{i}"
            );
        }
        let mut g = [0.5f32; GENES];
        mutate(&mut g, 0.5, 3.0, &mut rng);
        let moved = g.iter().filter(|&&x| x != 0.5).count();
        assert!((5..=35).contains(&moved), "{moved}");
        let mut edge = [1.0f32; GENES];
        mutate(&mut edge, 1.0, 3.0, &mut rng);
        assert!(edge.iter().all(|x| (0.0..=1.0).contains(x)));
    }

    #[test]
    fn nsga_fronts_and_crowding() {
        let obj = vec![
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![0.5, 0.5],
            vec![0.4, 0.4],
            vec![0.1, 0.1],
        ];
        let f = fronts(&obj);
        assert_eq!(f, vec![vec![0, 1, 2], vec![3], vec![4]]);
        let d = crowding(&obj, &f[0]);
        assert!(d[0].is_infinite() && d[1].is_infinite() && d[2].is_finite());
        assert_eq!(survive(&obj, 4), vec![0, 1, 2, 3]);
        assert_eq!(survive(&[vec![0.2], vec![0.9], vec![0.5]], 2), vec![1, 2]);
    }
}
